"""What the CLI, the lab and the nightly run print for people: tables, sizes, progress, and
a job followed as it runs. Below cli/, lab/ and nightly/, which all use it."""
