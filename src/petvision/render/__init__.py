"""Pictures: :mod:`.plots` draws the matplotlib figures the stages write."""
