"""Source transformations for ExecuTorch: module swaps applied to a private copy of the reference
module before ``torch.export`` (the ExecuTorch ``examples/models/llama/source_transformation``
approach). One transformation per file; each returns the number of modules it replaced."""
