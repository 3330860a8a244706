"""What reads finished runs: reports, comparisons, audits and the studies."""
