"""The run's tables for the report: the headline table of its landing page (``headline``) and the main
tables as CSV and HTML (``tables``), read off the stages' own tables with their own readers."""
