"""Evaluate: yes/no probes, scored the same way for every method."""

from paramem.evaluate.metrics import YesNoMetrics, yes_no_metrics
from paramem.evaluate.probes import Probe, load_probes

__all__ = ["Probe", "load_probes", "YesNoMetrics", "yes_no_metrics"]
