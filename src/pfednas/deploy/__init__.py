"""Deployment beyond simulation: a local multi-node run, TLS certificates, SuperNode keys.

``pfednas deploy local`` (:mod:`pfednas.deploy.local`) runs the app on a real
``flower-superlink`` and N ``flower-supernode`` processes with TLS and node
authentication; :mod:`pfednas.deploy.certs` makes the development CA, the
server certificate and the node key pairs; :mod:`pfednas.deploy.commands` holds
the Flower command lines shared with ``docker-compose.yml`` and the docs.
"""
