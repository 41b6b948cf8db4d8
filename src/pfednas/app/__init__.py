"""The Flower apps: the ServerApp (:mod:`server_app`, which Flower alone loads) and the
ClientApp (:mod:`client_app`), with what they write and check at the edges: checkpoints
(:mod:`checkpoint`), a run's metrics and summary (:mod:`results`), and the checks before a
run or a resume starts (:mod:`preflight`)."""
