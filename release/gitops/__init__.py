"""GitOps write-back: byte-exact values edits, guards, one atomic commit and a push that never loses an update."""
