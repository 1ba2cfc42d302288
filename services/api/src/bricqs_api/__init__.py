"""API service: mechanics definitions, participant state, leaderboards and the event catalog."""
