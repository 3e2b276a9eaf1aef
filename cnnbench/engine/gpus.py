"""Where the engine asks for a sweep job's GPU: it lives in ``cnnbench.launchers`` (the launchers' side).

``parts.py`` (the job's device) and ``records.py`` (env.json's ``gpu_sharing``) import these two names
from here until they import them from ``cnnbench.launchers.slots`` themselves.
"""

from cnnbench.launchers.slots import job_device, sharing_record

__all__ = ["job_device", "sharing_record"]
