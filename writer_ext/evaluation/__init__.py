"""CAMs scored over a whole data set: the loop (`loop.evaluate`), each rank's share of the data (`ranks`),
the running totals (`tally`) and what it returns (`EvalResult`)."""
