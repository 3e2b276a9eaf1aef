"""Reports over run folders: He et al. 2016 Figure 6 style curves, a table per configuration and the
papers' numbers (``cnnbench/core/reference.yaml``) next to the measured ones.

``make_report([Path("outputs/multirun/<stamp>")])`` writes report.png, report.md and report.csv;
``print_report(result, console)`` shows the table in the terminal; ``paper_reference(config)`` looks a
configuration up in the reference numbers.
"""

from cnnbench.reporting.core import ReportResult, make_report, print_report
from cnnbench.reporting.reference import paper_reference
from cnnbench.reporting.tables import CSV_COLUMNS

__all__ = ["CSV_COLUMNS", "ReportResult", "make_report", "paper_reference", "print_report"]
