"""The source check: find and import the golden and modified modeling files, and diff their syntax trees."""
