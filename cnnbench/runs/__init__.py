"""runs: the run folder and its lifecycle.

``cnnbench.runs`` is also the Python API's table of every run (``cnnbench.runs(model="resnet")``,
``cnnbench.api.runs``): once this package is imported, ``cnnbench.runs`` is the package, so calling the
package calls that function. The call imports the API by name, when called: the package itself stays
below the commands and the faces.
"""

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *filters: str, **options: Any) -> Any:
        import importlib

        return importlib.import_module("cnnbench.api").runs(*filters, **options)


sys.modules[__name__].__class__ = _CallablePackage
