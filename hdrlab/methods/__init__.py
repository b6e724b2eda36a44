"""One LightningModule per paper method, the two-stage composite and the baselines.

Every class derives from :class:`hdrlab.methods.base.HDRMethod`; configs select them by
``class_path`` (jsonargparse is the registry).
"""

from hdrlab.methods.base import HDRMethod
from hdrlab.methods.le2023_multiexposure import Le2023Method
from hdrlab.methods.two_stage import TwoStage
from hdrlab.methods.baselines import InverseCRFBaseline, LinearITMOBaseline
from hdrlab.methods.cfnet import CFNetMethod
from hdrlab.methods.singlehdr import SingleHDRMethod
from hdrlab.methods.cevr import CEVRMethod
from hdrlab.methods.deep_recursive import DeepRecursiveMethod
from hdrlab.methods.drtmo import DrTMOMethod
from hdrlab.methods.kim2021 import Kim2021Method
from hdrlab.methods.bracket_merger import BracketMergerMethod
from hdrlab.methods.kalantari import Kalantari2017
from hdrlab.methods.wu import Wu2018
from hdrlab.methods.ahdrnet import AHDRNet
from hdrlab.methods.duhdr import DuHDRMethod
from hdrlab.methods.expandnet import ExpandNetMethod
from hdrlab.methods.hdrcnn import HDRCNNMethod
