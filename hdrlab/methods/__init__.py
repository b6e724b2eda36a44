"""One LightningModule per paper method, the two-stage composite and the baselines.

Every class derives from :class:`hdrlab.methods.base.HDRMethod`; configs select them by
``class_path`` (jsonargparse is the registry).
"""

from hdrlab.methods.base import HDRMethod
