"""The personalized model at the end of the pipeline: kept, exported, run on the device.

* :mod:`.kept`: the folder a client keeps its final models in (weights + spec), written
  atomically and read back with every check (numpy only);
* :mod:`.spec`: what the spec beside the weights says (architecture, input, costs,
  profile and budget, accuracies, run and commit);
* :mod:`.rebuild`: the PyTorch network from a kept folder;
* :mod:`.formats`: TorchScript and ONNX files, each checked against the PyTorch model;
* :mod:`.runtime`: an exported file run by its own runtime (ONNX Runtime without PyTorch);
* :mod:`.measure`: inference latency and peak memory of an exported file, in a fresh
  process.
"""
