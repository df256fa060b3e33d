"""The example app: submissions that each start a workflow run."""
