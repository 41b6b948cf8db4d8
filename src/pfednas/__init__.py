"""pfednas: personalized federated neural architecture search on Flower."""

__version__ = "0.1.0"
