//! A client of Prometheus' HTTP API for instant queries (`/api/v1/query`), and the reading
//! of its answers. Only the queries of [`super`] are ever sent: nothing a browser says
//! reaches Prometheus.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde::Deserialize;

/// How long one query may take, connection included: the Fleet page asks every few
/// seconds, and a Prometheus that does not answer in this time is reported, not waited for.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of an answer that is read: a fleet of hundreds of GPUs answers in a few
/// hundred KiB.
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// A Prometheus server, by the URL its HTTP API is under.
#[derive(Debug, Clone)]
pub struct Prometheus {
    /// The URL as given, with a trailing `/`, so that `api/v1/query` joins under its path.
    base: Url,
    client: reqwest::Client,
}

/// Why a query gave no samples.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueryError {
    #[error("Prometheus at {url} did not answer within {} s", QUERY_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("cannot reach Prometheus at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// Prometheus answered, but with an error or something that is not its API's answer.
    #[error("Prometheus at {url} {reason}")]
    BadAnswer { url: String, reason: String },
}

/// One series of an instant vector: its labels (`__name__` among them where the query
/// keeps it) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

impl Prometheus {
    /// The Prometheus at `url` (`http://prometheus:9090`, or with a path prefix such as
    /// `http://monitoring.lan/prometheus`).
    pub fn new(url: &str) -> Result<Self, String> {
        let mut base = Url::parse(url.trim()).map_err(|e| {
            format!(
                "--prometheus-url must be a URL such as http://prometheus:9090, got `{url}`: {e}"
            )
        })?;
        match base.scheme() {
            "http" => {}
            "https" => {
                return Err(format!(
                    "--prometheus-url: this gpulab is built without TLS, so it reads Prometheus \
                     over http:// only (inside the cluster, or through a proxy), got `{url}`"
                ))
            }
            other => {
                return Err(format!(
                    "--prometheus-url must be an http:// URL, got the scheme `{other}` in `{url}`"
                ))
            }
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(format!(
                "--prometheus-url takes no query or fragment (`?…`, `#…`), got `{url}`"
            ));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let client = reqwest::Client::builder()
            .timeout(QUERY_TIMEOUT)
            .connect_timeout(QUERY_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot make the HTTP client for Prometheus: {e}"))?;
        Ok(Prometheus { base, client })
    }

    /// The URL to show: without a user name or password.
    pub fn display_url(&self) -> String {
        let mut url = self.base.clone();
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.as_str().trim_end_matches('/').to_owned()
    }

    /// Runs `query` at the present time and answers its instant vector.
    pub async fn query(&self, query: &str) -> Result<Vec<Sample>, QueryError> {
        let url = self.display_url();
        let endpoint = self
            .base
            .join("api/v1/query")
            .expect("a relative path joins any http URL");
        let sent = self
            .client
            .get(endpoint)
            .query(&[("query", query)])
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await;
        let mut response = sent.map_err(|e| transport_error(&url, e))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(&url, e))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(QueryError::BadAnswer {
                    url,
                    reason: format!(
                        "answered more than {} MiB to `{query}`",
                        MAX_ANSWER_BYTES >> 20
                    ),
                });
            }
            body.extend_from_slice(&chunk);
        }
        parse_vector(status, &body).map_err(|reason| QueryError::BadAnswer {
            url,
            reason: format!("{reason} (query `{query}`)"),
        })
    }
}

fn transport_error(url: &str, error: reqwest::Error) -> QueryError {
    if error.is_timeout() {
        return QueryError::Timeout { url: url.into() };
    }
    // reqwest's own message is "error sending request"; the causes say what happened. The
    // URL is left out: the message names Prometheus' already.
    let error = error.without_url();
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        reason = format!("{reason}: {cause}");
        source = cause.source();
    }
    QueryError::Unreachable {
        url: url.into(),
        reason,
    }
}

/// The envelope of every answer of Prometheus' HTTP API.
#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    data: Option<AnswerData>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AnswerData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

/// One series of a `vector` result: `{"metric": {…}, "value": [<seconds>, "<value>"]}`. A
/// native histogram has `histogram` instead of `value`; gpulab exports none.
#[derive(Debug, Deserialize)]
struct VectorSeries {
    metric: BTreeMap<String, String>,
    value: Option<(f64, String)>,
}

/// The samples of an answer to an instant query, or why there are none: an error status,
/// Prometheus' own error (`{"status":"error","errorType":…,"error":…}`), another result type
/// or a body that is not the API's JSON. A value is a string (`"1"`, `"NaN"`, `"+Inf"`).
pub fn parse_vector(status: StatusCode, body: &[u8]) -> Result<Vec<Sample>, String> {
    let answer: Answer = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        Err(e) => {
            let start = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
            return Err(if status.is_success() {
                format!("answered something that is not its API's JSON ({e}): `{start}`")
            } else {
                format!("answered {status}: `{start}`")
            });
        }
    };
    if answer.status != "success" {
        return Err(format!(
            "refused the query ({status}, {}): {}",
            answer.error_type.as_deref().unwrap_or("no error type"),
            answer.error.as_deref().unwrap_or("no reason given")
        ));
    }
    let data = answer
        .data
        .ok_or_else(|| "answered `success` without `data`".to_owned())?;
    if data.result_type != "vector" {
        return Err(format!(
            "answered a `{}` where an instant vector was expected",
            data.result_type
        ));
    }
    let series: Vec<VectorSeries> = serde_json::from_value(data.result)
        .map_err(|e| format!("answered a vector that cannot be read: {e}"))?;
    series
        .into_iter()
        .filter_map(|s| Some((s.metric, s.value?)))
        .map(|(labels, (_, value))| {
            let value = parse_value(&value)
                .ok_or_else(|| format!("answered `{value}`, which is not a number"))?;
            Ok(Sample { labels, value })
        })
        .collect()
}

/// A sample value as Prometheus writes it: Go's float formatting, with `NaN`, `+Inf`, `-Inf`.
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Answers of Debian's Prometheus 2.42 to the queries of the fleet, as it sent them.
    const NODES: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","instance":"127.0.0.1:18101","job":"gpulab"},"value":[1796293546.112,"1"]},{"metric":{"__name__":"up","instance":"127.0.0.1:18102","job":"gpulab"},"value":[1796293546.112,"0"]}]}}"#;
    const BAD_QUERY: &str = r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:4: parse error: missing unit character in duration"}"#;
    const MATRIX: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","instance":"127.0.0.1:18101","job":"gpulab"},"values":[[1796293545.823,"1"],[1796293546.823,"1"]]}]}}"#;
    const SCALAR: &str =
        r#"{"status":"success","data":{"resultType":"scalar","result":[1796293549.291,"NaN"]}}"#;

    #[test]
    fn a_vector_answer_gives_its_labels_and_values() {
        let samples = parse_vector(StatusCode::OK, NODES.as_bytes()).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].label("__name__"), Some("up"));
        assert_eq!(samples[0].label("instance"), Some("127.0.0.1:18101"));
        assert_eq!(samples[0].label("job"), Some("gpulab"));
        assert_eq!(samples[0].value, 1.0);
        assert_eq!(samples[1].value, 0.0);
    }

    #[test]
    fn an_empty_vector_is_no_samples() {
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_vector(StatusCode::OK, empty.as_bytes()), Ok(vec![]));
    }

    #[test]
    fn special_values_and_warnings_are_read() {
        let answer = r#"{"status":"success","warnings":["some series were dropped"],"data":{"resultType":"vector","result":[
            {"metric":{"device":"cuda:0"},"value":[1796293546.1,"NaN"]},
            {"metric":{"device":"cuda:1"},"value":[1796293546.1,"+Inf"]},
            {"metric":{"device":"cuda:2"},"value":[1796293546.1,"1.5e+09"]}]}}"#;
        let samples = parse_vector(StatusCode::OK, answer.as_bytes()).unwrap();
        assert!(samples[0].value.is_nan());
        assert_eq!(samples[1].value, f64::INFINITY);
        assert_eq!(samples[2].value, 1.5e9);
    }

    #[test]
    fn prometheus_errors_are_reported_with_their_type_and_reason() {
        let e = parse_vector(StatusCode::BAD_REQUEST, BAD_QUERY.as_bytes()).unwrap_err();
        assert!(e.contains("400 Bad Request"), "{e}");
        assert!(e.contains("bad_data"), "{e}");
        assert!(e.contains("missing unit character in duration"), "{e}");
    }

    #[test]
    fn other_result_types_are_refused() {
        let e = parse_vector(StatusCode::OK, MATRIX.as_bytes()).unwrap_err();
        assert!(e.contains("`matrix`"), "{e}");
        let e = parse_vector(StatusCode::OK, SCALAR.as_bytes()).unwrap_err();
        assert!(e.contains("`scalar`"), "{e}");
    }

    #[test]
    fn a_body_that_is_not_the_api_is_reported_with_its_start() {
        // What a web server that is not Prometheus answers.
        let e = parse_vector(
            StatusCode::NOT_FOUND,
            b"<html><body>Not Found</body></html>",
        )
        .unwrap_err();
        assert!(e.contains("404 Not Found"), "{e}");
        assert!(e.contains("<html>"), "{e}");
        let e = parse_vector(StatusCode::OK, b"{\"status\":\"success\"}").unwrap_err();
        assert!(e.contains("without `data`"), "{e}");
        let e = parse_vector(
            StatusCode::OK,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}"#,
        )
        .unwrap_err();
        assert!(e.contains("`x`"), "{e}");
    }

    #[test]
    fn the_url_must_be_http_and_keeps_its_path() {
        let p = Prometheus::new("http://monitoring.lan/prometheus").unwrap();
        assert_eq!(
            p.base.join("api/v1/query").unwrap().as_str(),
            "http://monitoring.lan/prometheus/api/v1/query"
        );
        let p = Prometheus::new("http://user:secret@prom:9090/").unwrap();
        assert_eq!(p.display_url(), "http://prom:9090");
        for (bad, says) in [
            ("prom:9090", "scheme"),
            ("https://prom:9090", "without TLS"),
            ("ftp://prom", "http://"),
            ("http://prom:9090/?x=1", "no query"),
            ("not a url", "such as http://prometheus:9090"),
        ] {
            let e = Prometheus::new(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
