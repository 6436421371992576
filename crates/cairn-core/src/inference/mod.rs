//! Open Inference Protocol v2 (KServe's "predict protocol v2", REST): the tensor signature a
//! deployment declares and the checks an `infer` request must pass before it reaches a replica.
//!
//! A deployment declares its signature where its scoring already says what it takes, never in the
//! deployment YAML (one source of truth):
//!
//! - without code, its MLflow model's `signature` (the `MLmodel` file, read when the deployment
//!   starts; a model logged with `signature=` or `input_example=` has it, and serves it the same
//!   under `/invocations`);
//! - with a `score.py`, the `inference_schema` decorators of its `run()`, as the script's own
//!   swagger document shows them (see [`script`]).
//!
//! MLflow has two kinds of schema, mapped so:
//!
//! - tensor-based (`{"type": "tensor", "tensor-spec": {"dtype", "shape"}}`): one tensor each,
//!   datatype from the numpy dtype, shape as declared (`-1` is any size); an unnamed one is
//!   `input-N` / `output-N` (N its position).
//! - column-based (`{"type": "double", "name": …}`): each column is a named 1-D tensor of shape
//!   `[-1]` (`double` FP64, `float` FP32, `long` INT64, `integer` INT32, `boolean` BOOL,
//!   `string`/`binary`/`datetime` BYTES); all columns of one request have the same length (the
//!   rows), and a column MLflow marks `"required": false` may be left out. The replica builds a
//!   DataFrame of them. Array, object and map columns have no tensor form: such a model has no
//!   signature here (its metadata says why).

pub mod script;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One tensor's metadata, as the model metadata route shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

/// The tensors a deployment takes and answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
    /// The inputs are a table's columns (MLflow's column-based schema): equal lengths.
    pub columns: bool,
    /// Inputs a request may leave out (columns MLflow marks not required).
    pub optional: BTreeSet<String>,
    /// How a scoring script's `run()` takes the tensors; None for an MLflow model.
    pub script: Option<script::ScriptCall>,
}

/// An `infer` request body.
#[derive(Clone, Debug, Deserialize)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, Value>>,
    pub inputs: Vec<InferInput>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct InferInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, Value>>,
    pub data: Value,
}

#[derive(Clone, Debug, Deserialize)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, Value>>,
}

/// The protocol's datatypes.
pub const DATATYPES: [&str; 13] = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64",
    "BYTES",
];

fn tensor_datatype(dtype: &str) -> Option<&'static str> {
    Some(match dtype {
        "bool" => "BOOL",
        "uint8" => "UINT8",
        "uint16" => "UINT16",
        "uint32" => "UINT32",
        "uint64" => "UINT64",
        "int8" => "INT8",
        "int16" => "INT16",
        "int32" => "INT32",
        "int64" => "INT64",
        "float16" => "FP16",
        "float32" => "FP32",
        "float64" => "FP64",
        "object" | "str" | "bytes" => "BYTES",
        d if d.starts_with("<U") || d.starts_with("|S") || d.starts_with("<S") => "BYTES",
        _ => return None,
    })
}

fn column_datatype(t: &str) -> Option<&'static str> {
    Some(match t {
        "double" => "FP64",
        "float" => "FP32",
        "long" => "INT64",
        "integer" => "INT32",
        "boolean" => "BOOL",
        "string" | "binary" | "datetime" => "BYTES",
        _ => return None,
    })
}

/// The tensors of one side (`inputs` or `outputs`) of an MLflow schema (its JSON text), and
/// whether they are columns; `prefix` names unnamed ones.
fn side(json: &str, prefix: &str) -> Result<(Vec<TensorMetadata>, bool, BTreeSet<String>), String> {
    let specs: Vec<Value> = serde_json::from_str(json)
        .map_err(|e| format!("the MLmodel signature's {prefix}s are not JSON: {e}"))?;
    let mut tensors = Vec::new();
    let mut optional = BTreeSet::new();
    let mut columns = false;
    for (i, spec) in specs.iter().enumerate() {
        let name = spec["name"].as_str().map(str::to_string).unwrap_or_else(|| format!("{prefix}-{i}"));
        let kind = spec["type"].as_str().unwrap_or_default();
        let t = if kind == "tensor" {
            let ts = &spec["tensor-spec"];
            let dtype = ts["dtype"].as_str().unwrap_or_default();
            let datatype = tensor_datatype(dtype).ok_or_else(|| {
                format!("{prefix} \"{name}\" has dtype {dtype:?}, which has no tensor datatype")
            })?;
            let shape = ts["shape"]
                .as_array()
                .and_then(|a| a.iter().map(Value::as_i64).collect::<Option<Vec<i64>>>())
                .ok_or_else(|| format!("{prefix} \"{name}\" has no shape"))?;
            TensorMetadata { name, datatype: datatype.into(), shape }
        } else {
            columns = true;
            let datatype = column_datatype(kind).ok_or_else(|| {
                format!("{prefix} column \"{name}\" is of type {kind:?}, which has no tensor form")
            })?;
            if spec["required"] == Value::Bool(false) {
                optional.insert(name.clone());
            }
            TensorMetadata { name, datatype: datatype.into(), shape: vec![-1] }
        };
        tensors.push(t);
    }
    let mut seen = BTreeSet::new();
    if let Some(dup) = tensors.iter().find(|t| !seen.insert(&t.name)) {
        return Err(format!("the signature names {prefix} \"{}\" twice", dup.name));
    }
    Ok((tensors, columns, optional))
}

impl Signature {
    /// From the `inputs` and `outputs` strings of an `MLmodel` file's `signature` (JSON texts);
    /// Err says why the model has no usable tensor signature.
    pub fn from_mlflow(inputs: &str, outputs: Option<&str>) -> Result<Signature, String> {
        let (inputs, columns, optional) = side(inputs, "input")?;
        if inputs.is_empty() {
            return Err("the MLmodel signature declares no inputs".into());
        }
        let outputs = match outputs {
            Some(o) => side(o, "output")?.0,
            None => Vec::new(),
        };
        Ok(Signature { inputs, outputs, columns, optional, script: None })
    }

    /// Checks `req` against the signature; Err is the 400 message, naming the tensor at fault.
    pub fn check(&self, req: &InferRequest) -> Result<(), String> {
        if req.inputs.is_empty() {
            return Err("\"inputs\" is empty: give one tensor per input of the signature".into());
        }
        let declared: BTreeMap<&str, &TensorMetadata> =
            self.inputs.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut given = BTreeSet::new();
        let mut rows: Option<(i64, &str)> = None;
        for input in &req.inputs {
            let name = input.name.as_str();
            let Some(spec) = declared.get(name) else {
                let names: Vec<&str> = self.inputs.iter().map(|t| t.name.as_str()).collect();
                return Err(format!(
                    "input \"{name}\" is not in the signature (inputs: {})",
                    names.join(", ")
                ));
            };
            if !given.insert(name) {
                return Err(format!("input \"{name}\" is given twice"));
            }
            if !DATATYPES.contains(&input.datatype.as_str()) {
                return Err(format!(
                    "input \"{name}\": datatype {:?} is not one of {}",
                    input.datatype,
                    DATATYPES.join(", ")
                ));
            }
            if input.datatype != spec.datatype {
                return Err(format!(
                    "input \"{name}\": datatype {} does not match the signature's {}",
                    input.datatype, spec.datatype
                ));
            }
            let fits = input.shape.len() == spec.shape.len()
                && input.shape.iter().zip(&spec.shape).all(|(g, d)| *g >= 0 && (*d < 0 || g == d));
            if !fits {
                return Err(format!(
                    "input \"{name}\": shape {:?} does not match the signature's {:?} (-1 is any size)",
                    input.shape, spec.shape
                ));
            }
            if self.columns {
                let n = input.shape[0];
                match rows {
                    Some((m, first)) if m != n => {
                        return Err(format!(
                            "input \"{name}\" has {n} row(s) but \"{first}\" has {m}: columns must have equal lengths"
                        ))
                    }
                    _ => rows = Some((n, name)),
                }
            }
            let expected: i64 = input.shape.iter().product();
            let mut count = 0i64;
            check_data(&input.data, &input.datatype, &mut count)
                .map_err(|e| format!("input \"{name}\": {e}"))?;
            if count != expected {
                return Err(format!(
                    "input \"{name}\": shape {:?} holds {expected} element(s) but \"data\" has {count}",
                    input.shape
                ));
            }
        }
        if let Some(missing) =
            self.inputs.iter().find(|t| !given.contains(t.name.as_str()) && !self.optional.contains(&t.name))
        {
            return Err(format!("input \"{}\" of the signature is missing", missing.name));
        }
        // Outputs a signature does not declare (a script without @output_schema) are known only
        // once answered: the request's list then filters the answer.
        if let Some(outputs) = req.outputs.as_ref().filter(|_| !self.outputs.is_empty()) {
            for o in outputs {
                if !self.outputs.iter().any(|t| t.name == o.name) {
                    let names: Vec<&str> = self.outputs.iter().map(|t| t.name.as_str()).collect();
                    return Err(format!(
                        "output \"{}\" is not in the signature (outputs: {})",
                        o.name,
                        names.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Counts the elements of `data` (flat or nested, row-major) and checks each fits `datatype`.
fn check_data(data: &Value, datatype: &str, count: &mut i64) -> Result<(), String> {
    match data {
        Value::Array(items) => {
            for v in items {
                check_data(v, datatype, count)?;
            }
            Ok(())
        }
        v => {
            *count += 1;
            if fits(v, datatype) {
                Ok(())
            } else {
                let shown: String = v.to_string().chars().take(40).collect();
                Err(format!("element {} ({shown}) is not a valid {datatype}", *count - 1))
            }
        }
    }
}

/// Whether the scalar `v` is a valid element of `datatype`.
fn fits(v: &Value, datatype: &str) -> bool {
    match datatype {
        "BOOL" => v.is_boolean(),
        "BYTES" => v.is_string(),
        "FP16" | "FP32" | "FP64" => v.is_number(),
        unsigned if unsigned.starts_with("UINT") => v.as_u64().is_some_and(|n| n <= max_of(unsigned)),
        signed => v.as_i64().is_some_and(|n| n.unsigned_abs() <= max_of(signed) + u64::from(n < 0)),
    }
}

/// The largest value of an integer datatype.
fn max_of(datatype: &str) -> u64 {
    match datatype {
        "UINT8" => u8::MAX as u64,
        "UINT16" => u16::MAX as u64,
        "UINT32" => u32::MAX as u64,
        "UINT64" => u64::MAX,
        "INT8" => i8::MAX as u64,
        "INT16" => i16::MAX as u64,
        "INT32" => i32::MAX as u64,
        _ => i64::MAX as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINE_INPUTS: &str = r#"[{"type": "double", "name": "fixed acidity", "required": true},
        {"type": "double", "name": "alcohol", "required": true},
        {"type": "long", "name": "batch", "required": false}]"#;

    fn req(body: Value) -> InferRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn column_signatures_become_named_one_dimensional_tensors() {
        let s =
            Signature::from_mlflow(WINE_INPUTS, Some(r#"[{"type": "double", "required": true}]"#)).unwrap();
        assert!(s.columns);
        assert_eq!(
            s.inputs[0],
            TensorMetadata { name: "fixed acidity".into(), datatype: "FP64".into(), shape: vec![-1] }
        );
        assert_eq!(s.inputs[2].datatype, "INT64");
        assert_eq!(s.optional, BTreeSet::from(["batch".to_string()]));
        assert_eq!(s.outputs[0].name, "output-0");

        let ok = req(serde_json::json!({"inputs": [
            {"name": "fixed acidity", "shape": [2], "datatype": "FP64", "data": [7.4, 7.8]},
            {"name": "alcohol", "shape": [2], "datatype": "FP64", "data": [9.4, 9]}]}));
        s.check(&ok).unwrap();

        let cases = [
            (
                serde_json::json!([{"name": "alcohol", "shape": [1], "datatype": "FP64", "data": [9.4]}]),
                "input \"fixed acidity\" of the signature is missing",
            ),
            (
                serde_json::json!([{"name": "acid", "shape": [1], "datatype": "FP64", "data": [1]}]),
                "input \"acid\" is not in the signature",
            ),
            (
                serde_json::json!([{"name": "alcohol", "shape": [1], "datatype": "FP32", "data": [1]}]),
                "input \"alcohol\": datatype FP32 does not match the signature's FP64",
            ),
            (
                serde_json::json!([{"name": "alcohol", "shape": [1, 1], "datatype": "FP64", "data": [1]}]),
                "input \"alcohol\": shape [1, 1] does not match",
            ),
            (
                serde_json::json!([{"name": "alcohol", "shape": [2], "datatype": "FP64", "data": [1]}]),
                "input \"alcohol\": shape [2] holds 2 element(s) but \"data\" has 1",
            ),
            (
                serde_json::json!([{"name": "alcohol", "shape": [1], "datatype": "FP64", "data": ["x"]}]),
                "input \"alcohol\": element 0 (\"x\") is not a valid FP64",
            ),
            (
                serde_json::json!([{"name": "alcohol", "shape": [1], "datatype": "FP64", "data": [1]},
                                {"name": "fixed acidity", "shape": [2], "datatype": "FP64", "data": [1, 2]}]),
                "input \"fixed acidity\" has 2 row(s) but \"alcohol\" has 1",
            ),
            (
                serde_json::json!([{"name": "batch", "shape": [1], "datatype": "INT64", "data": [1.5]}]),
                "input \"batch\": element 0 (1.5) is not a valid INT64",
            ),
        ];
        for (inputs, message) in cases {
            let err = s.check(&req(serde_json::json!({"inputs": inputs}))).unwrap_err();
            assert!(err.contains(message), "{err}\nexpected: {message}");
        }
        let err = s
            .check(&req(serde_json::json!({"inputs": [
                {"name": "fixed acidity", "shape": [1], "datatype": "FP64", "data": [1]},
                {"name": "alcohol", "shape": [1], "datatype": "FP64", "data": [1]}],
                "outputs": [{"name": "proba"}]})))
            .unwrap_err();
        assert!(err.contains("output \"proba\" is not in the signature (outputs: output-0)"), "{err}");
    }

    #[test]
    fn tensor_signatures_keep_their_shapes_and_nested_data_counts() {
        let s = Signature::from_mlflow(
            r#"[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 2, 2]}}]"#,
            Some(
                r#"[{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}, "name": "label"}]"#,
            ),
        )
        .unwrap();
        assert!(!s.columns);
        assert_eq!(
            s.inputs[0],
            TensorMetadata { name: "input-0".into(), datatype: "FP32".into(), shape: vec![-1, 2, 2] }
        );
        assert_eq!(s.outputs[0].name, "label");
        let nested = serde_json::json!({"inputs": [{"name": "input-0", "shape": [1, 2, 2], "datatype": "FP32",
            "data": [[[1, 2], [3, 4]]]}]});
        s.check(&req(nested)).unwrap();
        let wrong = serde_json::json!({"inputs": [{"name": "input-0", "shape": [1, 3, 2], "datatype": "FP32",
            "data": [1, 2, 3, 4, 5, 6]}]});
        assert!(s
            .check(&req(wrong))
            .unwrap_err()
            .contains("shape [1, 3, 2] does not match the signature's [-1, 2, 2]"));
        let bad_type = serde_json::json!({"inputs": [{"name": "input-0", "shape": [1], "datatype": "FLOAT", "data": [1]}]});
        assert!(s.check(&req(bad_type)).unwrap_err().contains("datatype \"FLOAT\" is not one of BOOL"));
    }

    #[test]
    fn integer_ranges_and_unusable_schemas() {
        let s = Signature::from_mlflow(
            r#"[{"type": "tensor", "tensor-spec": {"dtype": "int8", "shape": [-1]}}]"#,
            None,
        )
        .unwrap();
        let data = |d: Value| {
            req(
                serde_json::json!({"inputs": [{"name": "input-0", "shape": [1], "datatype": "INT8", "data": [d]}]}),
            )
        };
        s.check(&data(serde_json::json!(-128))).unwrap();
        s.check(&data(serde_json::json!(127))).unwrap();
        assert!(s.check(&data(serde_json::json!(128))).is_err());
        assert!(s.check(&data(serde_json::json!(-129))).is_err());
        let err =
            Signature::from_mlflow(r#"[{"type": "array", "items": {"type": "double"}, "name": "v"}]"#, None)
                .unwrap_err();
        assert!(err.contains("input column \"v\" is of type \"array\", which has no tensor form"), "{err}");
        assert!(Signature::from_mlflow("[]", None).unwrap_err().contains("no inputs"));
        assert!(Signature::from_mlflow("nope", None).unwrap_err().contains("not JSON"));
    }
}
