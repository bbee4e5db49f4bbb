"""Live statistics of a memifx process, in one small shared-memory file.

- schema: the counters memifx keeps (names, order, metric names), declared
  once and checked against the C structs;
- layout: where the stats file lives and how it is laid out;
- writer: this process's file (StatsFile, process_stats) and mapping slots
  of it into worker processes (attach_fd, attach_node_fd);
- reader: reading every process's file (read_file, scan), as ``memifx show``
  does;
- exporters: Prometheus text and the /metrics server.
"""
from memifx.stats.exporters import MetricsServer, prometheus_text
from memifx.stats.layout import stats_dir
from memifx.stats.reader import read_file, scan
from memifx.stats.writer import (SLOT, StatsFile, attach_fd, attach_node_fd,
                                 process_stats)

__all__ = ["MetricsServer", "SLOT", "StatsFile", "attach_fd", "attach_node_fd",
           "process_stats", "prometheus_text", "read_file", "scan", "stats_dir"]
