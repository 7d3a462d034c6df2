"""The parts of PyTorch Geometric the project uses, imported in one place.

Importing ``torch_geometric`` makes it call ``torch.jit.script``, which recent PyTorch
answers with a ``FutureWarning`` that the user can do nothing about; it is silenced here,
for that import only.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated",
                            category=FutureWarning)
    from torch_geometric.data import Batch, Data
    from torch_geometric.utils import to_dense_batch

__all__ = ["Batch", "Data", "to_dense_batch"]
