"""Unit tests of check.py's PromQL reading and its server metric list (`cargo xtask deploy`
runs them before the checks)."""

import unittest
from pathlib import Path

from check import cross_references, docker_run_flags, load_yaml_documents, metric_names, server_metrics


class MetricNames(unittest.TestCase):
    def test_selectors_functions_and_grouping(self):
        self.assertEqual(
            metric_names('histogram_quantile(0.95, sum by (le, kernel) '
                         '(rate(gpulab_job_duration_seconds_bucket{instance=~"$instance"}[$__rate_interval])))'),
            {"gpulab_job_duration_seconds_bucket"},
        )
        self.assertEqual(
            metric_names('avg by (model) (gpulab_gpu_utilization_ratio * on (job, instance, device) '
                         'group_left (model) label_replace(gpulab_device_info{kind="cuda"}, "model", "$1", "name", "(.*)"))'),
            {"gpulab_gpu_utilization_ratio", "gpulab_device_info"},
        )

    def test_keywords_numbers_and_offsets_are_not_metrics(self):
        self.assertEqual(
            metric_names("delta(gpulab_gpu_retired_pages[1h]) > 0 or gpulab_gpu_retired_pages >= 6e1 "
                         "unless on (uuid) up offset 5m == bool 1"),
            {"gpulab_gpu_retired_pages", "up"},
        )

    def test_recording_rule_names_with_colons(self):
        self.assertEqual(
            metric_names("instance:gpulab_jobs_failed:rate5m > 0.5 * instance:gpulab_jobs_ended:rate5m"),
            {"instance:gpulab_jobs_failed:rate5m", "instance:gpulab_jobs_ended:rate5m"},
        )

    def test_a_misspelt_metric_is_seen(self):
        self.assertEqual(metric_names('sum(gpulab_gpu_temprature_celsius{device="cuda:0"})'),
                         {"gpulab_gpu_temprature_celsius"})


class ServerMetrics(unittest.TestCase):
    def test_reads_the_families_and_the_histogram_series(self):
        names = server_metrics()
        for name in ["gpulab_gpu_temperature_celsius", "gpulab_device_info", "gpulab_jobs_total",
                     "gpulab_gpu_throttle_reason", "gpulab_job_duration_seconds_bucket",
                     "gpulab_job_duration_seconds_count"]:
            self.assertIn(name, names)
        self.assertNotIn("gpulab_gpu_temperature_celsius_bucket", names)


class CrossReferences(unittest.TestCase):
    def resources(self):
        return load_yaml_documents(Path("deploy/kubernetes/rendered/base.yaml"))

    def test_the_base_fits_together(self):
        self.assertEqual(cross_references(self.resources()), [])

    def test_a_writable_root_a_gpu_request_and_a_wrong_secret_are_found(self):
        resources = self.resources()
        for r in resources:
            if r["kind"] == "DaemonSet":
                c = r["spec"]["template"]["spec"]["containers"][0]
                c["securityContext"]["readOnlyRootFilesystem"] = False
                c["resources"]["limits"]["nvidia.com/gpu"] = 1
                c["volumeMounts"] = [m for m in c["volumeMounts"] if m["mountPath"] != "/tmp"]
            if r["kind"] == "ServiceMonitor":
                r["spec"]["endpoints"][0]["authorization"]["credentials"]["name"] = "other"
        problems = "\n".join(cross_references(resources))
        for expected in ["readOnlyRootFilesystem", "nvidia.com/gpu", "/tmp", "token"]:
            self.assertIn(expected, problems)

    def test_the_pods_security_context_as_docker_run_flags(self):
        # What the container test runs the image with: the Pod's user, a read-only root
        # with /tmp writable, no capabilities, no privilege escalation.
        self.assertEqual(
            docker_run_flags(self.resources()),
            ["--user", "999:999", "--group-add", "999", "--read-only", "--tmpfs", "/tmp",
             "--cap-drop", "ALL", "--security-opt", "no-new-privileges"],
        )


if __name__ == "__main__":
    unittest.main()
