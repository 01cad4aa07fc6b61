"""What the schedule runs: reconciliation with Pipecat Cloud and the orphan sweep."""
