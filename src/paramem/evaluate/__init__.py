"""Evaluate: yes/no probes, scored the same way for every method."""

from paramem.evaluate.probes import Probe, load_probes
from paramem.metrics.yes_no import YesNoMetrics, yes_no_metrics

__all__ = ["Probe", "load_probes", "YesNoMetrics", "yes_no_metrics"]
