"""Starting a session: the server policy, the direct start, the capacity queue and its dispatcher."""
