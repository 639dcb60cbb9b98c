"""What a run found and decided: typed summary rows, the judge's verdicts, the objective, the console table and
the run card. Imports no ML framework."""
