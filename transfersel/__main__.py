from transfersel.cli import app

app(prog_name="transfersel")
