// Validates ServiceMonitors, given as a JSON list on standard input, with the schema that
// @kubernetes-models/prometheus-operator generates from the Prometheus Operator's
// monitoring.coreos.com/v1 API: types, enumerations, patterns and required fields. It does
// not reject unknown fields (the generated schema allows them). Prints one line per
// resource; exits 1 when any is invalid.
import fs from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const resources = JSON.parse(fs.readFileSync(0, "utf8"));
let invalid = 0;
for (const { file, resource } of resources) {
  const name = `${file}: servicemonitor/${resource?.metadata?.name}`;
  try {
    new ServiceMonitor(resource).validate();
    console.log(`${name} passed (monitoring.coreos.com/v1)`);
  } catch (error) {
    console.log(`${name} is invalid: ${error.message}`);
    invalid += 1;
  }
}
process.exit(invalid ? 1 : 0);
