"""The compare view: runs side by side and overlaid, live. Used by the experiment page and the
compare page (webapp/pages/experiment.py, webapp/pages/compare.py)."""
