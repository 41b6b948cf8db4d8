"""A client's personalized model handed over for the device: ``pfednas export`` (:mod:`export`,
and :mod:`export_checkpoint` for ``--from-checkpoint``) and ``pfednas predict``
(:mod:`predict`, an exported file run with its own runtime)."""
