"""The data model: layers, the SQL of each stage, publishing and quality suites."""
