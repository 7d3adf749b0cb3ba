"""Infrastructure definition and the code that applies it outside CloudFormation."""
