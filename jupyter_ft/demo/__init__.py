"""Bundled demo task: route support tickets to one of five teams (see scripts/make_demo_data.py)."""
