// Parses an AsyncAPI document with the official parser and prints its diagnostics as JSON:
// {"valid": bool, "diagnostics": [{"severity", "code", "message", "path"}]}.
// Usage: node validate.cjs PARSER_PREFIX DOCUMENT  (PARSER_PREFIX: where npm installed it)
"use strict";
const path = require("node:path");
const { createRequire } = require("node:module");

async function main() {
  const [prefix, document] = process.argv.slice(2);
  const load = createRequire(path.resolve(prefix, "package.json"));
  const { Parser, fromFile } = load("@asyncapi/parser");
  const parser = new Parser();
  const { document: parsed, diagnostics } = await fromFile(parser, path.resolve(document)).parse();
  const report = diagnostics.map((d) => ({
    severity: ["error", "warning", "information", "hint"][d.severity] ?? String(d.severity),
    code: String(d.code),
    message: d.message,
    path: d.path.join("/"),
  }));
  process.stdout.write(JSON.stringify({ valid: parsed !== undefined, diagnostics: report }) + "\n");
}

main().catch((error) => {
  process.stderr.write(`asyncapi parser failed: ${error && error.stack ? error.stack : error}\n`);
  process.exit(2);
});
