"""The notebook client: a Landscope server's runs, metrics, probe records, histograms and
analyses as pandas DataFrames and numpy grids (`pip install 'landscope[notebook]'`).

Torch-free and pandas-free to import: pandas loads when the first frame is built.
"""

from landscope.client.analysis import Analysis, AnalysisStep
from landscope.client.client import Client
from landscope.client.errors import LandscopeError

__all__ = ["Analysis", "AnalysisStep", "Client", "LandscopeError"]
