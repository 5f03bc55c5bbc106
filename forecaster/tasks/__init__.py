"""Task pipelines: price (quantiles of returns), trend (regime probabilities), gdp (nowcast)."""
