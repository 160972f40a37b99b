"""Model source backends, one module each; :mod:`transfersel.zoo.registry` imports them all on first use."""
