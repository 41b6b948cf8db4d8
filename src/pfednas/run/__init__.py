"""How a simulation runs: ``flwr run`` on a SuperLink the command owns (:mod:`launcher`),
on a Ray cluster (:mod:`ray_cluster`), or every client in one process with the real
strategy and ClientApp handlers (:mod:`inprocess`)."""
