"""What a run leaves for people: summary.json, the table, the picture, merged
summaries of shards and jobs, and the command that reruns one range."""
