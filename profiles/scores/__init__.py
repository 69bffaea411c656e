"""Scores: RFM quintiles and named groups, behavioural clusters; stored as computed traits."""
