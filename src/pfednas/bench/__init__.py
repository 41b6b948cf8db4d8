"""The bench: a preset's cells (:mod:`cells`), running them (:mod:`runs`), the tuning grid
(:mod:`tuning`), the ``pfednas bench`` command (:mod:`cli`) and the results pages rendered from
the current cells (:mod:`pages`, ``pfednas report``)."""
