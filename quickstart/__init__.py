"""The Azure Batch AI CNTK quickstart, and the local cloud that lets it run today."""
