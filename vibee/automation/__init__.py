"""Automation: what VIBEE does with the messages its accounts receive."""
