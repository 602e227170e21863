"""What the organiser's side makes of collected predictions: per-task scores, contributivity,
leaderboard rows and exports."""
