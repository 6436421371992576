//! The inference protocol for a deployment with a `score.py`: its tensor signature, read from the
//! `inference_schema` decorators of its `run()` (`@input_schema`, `@output_schema`) as its own
//! swagger document shows them (`ServiceInput`, `ServiceOutput`); an infer request turned into the
//! JSON body `run()` takes on `/score`, so the decorators convert it as they convert any scoring
//! request; and `run()`'s answer turned into output tensors.
//!
//! Inputs are `run()`'s parameters (the properties of `ServiceInput`):
//! - an array (of arrays …) of numbers, integers, booleans or strings — a `NumpyParameterType`, or
//!   a `StandardPythonParameterType` list — is one tensor named after the parameter: datatype from
//!   the leaf's swagger type and format, shape `[-1, …]` (any batch, then the sample's other
//!   sizes); it is sent as a nested list;
//! - an array of objects — a `PandasParameterType` (orient `records`) — is a table: each column a
//!   named 1-D tensor `[-1]`, sent as rows `[{column: value, …}, …]` in the sample's column order;
//! - any other parameter (a scalar, a dict) is no tensor: it is taken by name from the request's
//!   `parameters` when given there, else `run()`'s default applies.
//!
//! Arrays and a table together, or two tables, have no signature: a column and an array could not
//! be told apart by name alone. Outputs (`ServiceOutput`): an array is `output-0`, a table its
//! columns, an object of arrays one tensor per key. Whatever `run()` returns is converted by the
//! same rules (a returned JSON string is parsed first), so a script without `@output_schema` can
//! still be inferred with; its metadata lists no outputs.

use serde_json::Value;

use super::{fits, InferInput, InferRequest, Signature, TensorMetadata};

/// How a scoring script's `run()` takes an infer request's tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptCall {
    /// The parameter whose table the inputs are the columns of; None when each input is the
    /// parameter of its own name.
    pub table: Option<String>,
    /// `run()`'s parameters that are no tensors, taken from the request's `parameters`.
    pub parameters: Vec<String>,
}

const UNDECLARED: &str = "run() declares no input schema: decorate it with inference_schema's \
    @input_schema(NAME, NumpyParameterType(sample)) or PandasParameterType(sample) to serve the inference \
    protocol (POST …/score works without one)";

/// The `ServiceInput` and `ServiceOutput` schemas of a swagger 2 or OpenAPI 3 document.
fn service_schemas(doc: &Value) -> Option<(&Value, &Value)> {
    let schemas = doc.get("definitions").or_else(|| doc.pointer("/components/schemas"))?;
    Some((schemas.get("ServiceInput")?, schemas.get("ServiceOutput").unwrap_or(&Value::Null)))
}

/// A scalar schema's tensor datatype (inference_schema writes numpy dtypes so).
fn leaf_datatype(schema: &Value) -> Option<&'static str> {
    let format = schema["format"].as_str().unwrap_or_default();
    Some(match schema["type"].as_str()? {
        "number" if format == "float" => "FP32",
        "number" => "FP64",
        "integer" => match format {
            "int8" => "INT8",
            "int16" => "INT16",
            "int32" => "INT32",
            "uint8" => "UINT8",
            "uint16" => "UINT16",
            "uint32" => "UINT32",
            "uint64" => "UINT64",
            _ => "INT64",
        },
        "boolean" => "BOOL",
        "string" => "BYTES",
        _ => return None,
    })
}

/// An array (of arrays …) of scalars: its rank and datatype.
fn array_of_scalars(schema: &Value) -> Option<(usize, &'static str)> {
    let (mut rank, mut s) = (0, schema);
    while s["type"] == "array" {
        rank += 1;
        s = &s["items"];
    }
    if rank == 0 {
        return None;
    }
    Some((rank, leaf_datatype(s)?))
}

/// `[-1, …]`: any batch, then the sizes of the sample (`example`) beyond the first, -1 where the
/// sample says nothing.
fn shape_of_sample(example: &Value, rank: usize) -> Vec<i64> {
    let mut shape = vec![-1];
    let mut v = example;
    for _ in 1..rank {
        v = v.get(0).unwrap_or(&Value::Null);
        shape.push(v.as_array().map_or(-1, |a| a.len() as i64));
    }
    shape
}

/// The columns of a table parameter (an array of objects), in the sample's order; None when
/// `schema` is no table; Err when it is one that has no tensor form.
fn table_columns(param: &str, schema: &Value) -> Result<Option<Vec<TensorMetadata>>, String> {
    let items = &schema["items"];
    if schema["type"] != "array" || items["type"] != "object" {
        return Ok(None);
    }
    if let Some(orient) = schema["format"].as_str().and_then(|f| f.strip_prefix("pandas.DataFrame:")) {
        if orient != "records" {
            return Err(format!(
                "parameter \"{param}\" is a DataFrame in orient {orient:?}; the inference protocol serves orient \
                 \"records\" (PandasParameterType's default)"
            ));
        }
    }
    let properties = items["properties"].as_object().filter(|p| !p.is_empty()).ok_or_else(|| {
        format!("parameter \"{param}\" is a list of objects without named columns: it has no tensor form")
    })?;
    // inference_schema lists every column under `required`, in the DataFrame's order; the
    // properties object itself is unordered once parsed.
    let order: Vec<&str> = match items["required"].as_array() {
        Some(names) => names.iter().filter_map(Value::as_str).collect(),
        None => properties.keys().map(String::as_str).collect(),
    };
    let mut columns = Vec::new();
    for name in order {
        let datatype = properties.get(name).and_then(leaf_datatype).ok_or_else(|| {
            format!("column \"{name}\" of parameter \"{param}\" is not a number, integer, boolean or string")
        })?;
        columns.push(TensorMetadata { name: name.into(), datatype: datatype.into(), shape: vec![-1] });
    }
    Ok(Some(columns))
}

/// The output tensors a `ServiceOutput` schema declares (none when it declares no tensors).
fn declared_outputs(schema: &Value) -> Vec<TensorMetadata> {
    if let Ok(Some(columns)) = table_columns("output", schema) {
        return columns;
    }
    if let Some((rank, datatype)) = array_of_scalars(schema) {
        let shape = shape_of_sample(&schema["example"], rank);
        return vec![TensorMetadata { name: "output-0".into(), datatype: datatype.into(), shape }];
    }
    let Some(properties) = schema["properties"].as_object() else {
        return Vec::new();
    };
    let mut tensors = Vec::new();
    for (name, s) in properties {
        match array_of_scalars(s) {
            Some((rank, datatype)) => tensors.push(TensorMetadata {
                name: name.clone(),
                datatype: datatype.into(),
                shape: shape_of_sample(&schema["example"][name.as_str()], rank),
            }),
            None => return Vec::new(),
        }
    }
    tensors
}

impl Signature {
    /// From the swagger document a scoring script serves (`GET /swagger.json`); Err says why the
    /// script has no usable tensor signature.
    pub fn from_script_swagger(doc: &Value) -> Result<Signature, String> {
        let (input, output) = service_schemas(doc).ok_or(UNDECLARED)?;
        let properties = input["properties"].as_object().filter(|p| !p.is_empty()).ok_or(UNDECLARED)?;
        let (mut arrays, mut tables, mut parameters) = (Vec::new(), Vec::new(), Vec::new());
        for (name, schema) in properties {
            if let Some(columns) = table_columns(name, schema)? {
                tables.push((name.clone(), columns));
            } else if let Some((rank, datatype)) = array_of_scalars(schema) {
                let shape = shape_of_sample(&input["example"][name.as_str()], rank);
                arrays.push(TensorMetadata { name: name.clone(), datatype: datatype.into(), shape });
            } else {
                parameters.push(name.clone());
            }
        }
        let (inputs, table) = match (arrays.is_empty(), tables.len()) {
            (false, 0) => (arrays, None),
            (true, 1) => {
                let (name, columns) = tables.remove(0);
                (columns, Some(name))
            }
            (true, 0) => {
                return Err(format!(
                    "none of run()'s parameters ({}) is an array or a DataFrame: there is no tensor to infer \
                     with (POST …/score works)",
                    parameters.join(", ")
                ))
            }
            _ => {
                let mut names: Vec<&str> = arrays.iter().map(|t| t.name.as_str()).collect();
                names.extend(tables.iter().map(|(n, _)| n.as_str()));
                return Err(format!(
                    "run() takes several DataFrames, or DataFrames and arrays ({}): their tensors could not be \
                     told apart by name; take one DataFrame, or arrays only",
                    names.join(", ")
                ));
            }
        };
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = inputs.iter().find(|t| !seen.insert(t.name.as_str())) {
            return Err(format!("the signature names input \"{}\" twice", dup.name));
        }
        Ok(Signature {
            columns: table.is_some(),
            inputs,
            outputs: declared_outputs(output),
            optional: Default::default(),
            script: Some(ScriptCall { table, parameters }),
        })
    }
}

/// The leaves of `data` (flat or nested, row-major).
fn leaves(data: &Value) -> Vec<&Value> {
    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            leaf => out.push(leaf),
        }
    }
    let mut out = Vec::new();
    walk(data, &mut out);
    out
}

/// `flat` as nested lists of `shape` (row-major); `flat` holds exactly the shape's elements.
fn nest(flat: &[&Value], shape: &[i64]) -> Value {
    match shape {
        [] | [_] => Value::Array(flat.iter().map(|v| (*v).clone()).collect()),
        [n, rest @ ..] => {
            let chunk = flat.len() / (*n).max(1) as usize;
            Value::Array(flat.chunks(chunk.max(1)).map(|c| nest(c, rest)).collect())
        }
    }
}

fn push_field(out: &mut String, name: &str, json: &str) {
    if out.len() > 1 {
        out.push(',');
    }
    out.push_str(&Value::from(name).to_string());
    out.push(':');
    out.push_str(json);
}

impl ScriptCall {
    /// The JSON text `run()` takes for `req` on `/score`; `req` has passed `sig.check`.
    pub fn body(&self, sig: &Signature, req: &InferRequest) -> String {
        let mut out = String::from("{");
        match &self.table {
            None => {
                for input in &req.inputs {
                    push_field(&mut out, &input.name, &nest(&leaves(&input.data), &input.shape).to_string());
                }
            }
            Some(table) => {
                // Written by hand: a row's keys must keep the DataFrame's column order.
                let given: Vec<(&str, Vec<&Value>)> = sig
                    .inputs
                    .iter()
                    .filter_map(|t| req.inputs.iter().find(|i| i.name == t.name))
                    .map(|i: &InferInput| (i.name.as_str(), leaves(&i.data)))
                    .collect();
                let rows = given.first().map_or(0, |(_, v)| v.len());
                let mut text = String::from("[");
                for r in 0..rows {
                    text.push_str(if r == 0 { "{" } else { ",{" });
                    for (c, (name, values)) in given.iter().enumerate() {
                        if c > 0 {
                            text.push(',');
                        }
                        text.push_str(&Value::from(*name).to_string());
                        text.push(':');
                        text.push_str(&values[r].to_string());
                    }
                    text.push('}');
                }
                text.push(']');
                push_field(&mut out, table, &text);
            }
        }
        for p in &self.parameters {
            if let Some(v) = req.parameters.as_ref().and_then(|m| m.get(p)) {
                push_field(&mut out, p, &v.to_string());
            }
        }
        out.push('}');
        out
    }
}

/// The datatype of a list of JSON scalars, when they share one.
fn datatype_of(values: &[&Value]) -> Option<&'static str> {
    if values.iter().all(|v| v.is_boolean()) {
        Some("BOOL")
    } else if values.iter().all(|v| v.is_i64() || v.is_u64()) {
        Some("INT64")
    } else if values.iter().all(|v| v.is_number()) {
        Some("FP64")
    } else if values.iter().all(|v| v.is_string()) {
        Some("BYTES")
    } else {
        None
    }
}

/// One output tensor from a JSON value (a scalar is a tensor of shape `[1]`); `hint` is the
/// declared datatype, used when every element fits it.
fn tensor(name: &str, value: &Value, hint: Option<&str>) -> Result<Value, String> {
    let mut shape = Vec::new();
    let mut v = value;
    while let Value::Array(items) = v {
        shape.push(items.len() as i64);
        match items.first() {
            Some(first) => v = first,
            None => break,
        }
    }
    if shape.is_empty() {
        shape.push(1);
    }
    let flat = leaves(value);
    let expected: i64 = shape.iter().product();
    if flat.len() as i64 != expected || flat.iter().any(|v| v.is_array() || v.is_object()) {
        return Err(format!("output \"{name}\" is not a rectangular array of scalars"));
    }
    let datatype = match hint.filter(|h| flat.iter().all(|v| fits(v, h))) {
        Some(h) => h,
        None if flat.is_empty() => "FP64",
        None => datatype_of(&flat)
            .ok_or_else(|| format!("output \"{name}\" mixes types: it has no tensor form"))?,
    };
    Ok(serde_json::json!({ "name": name, "datatype": datatype, "shape": shape, "data": flat }))
}

/// What `run()` answered (the JSON of its `/score` answer) as output tensors, named and typed by
/// `declared` where it says.
pub fn outputs_of(answer: &Value, declared: &[TensorMetadata]) -> Result<Vec<Value>, String> {
    let hint = |name: &str| declared.iter().find(|t| t.name == name).map(|t| t.datatype.as_str());
    // A script that returns json.dumps(...) answers a JSON string holding the result.
    let parsed;
    let answer = match answer.as_str().map(serde_json::from_str::<Value>) {
        Some(Ok(v)) if v.is_array() || v.is_object() => {
            parsed = v;
            &parsed
        }
        _ => answer,
    };
    match answer {
        Value::Null => Err("run() answered null: there is no tensor to answer with".into()),
        Value::Array(rows) if !rows.is_empty() && rows.iter().all(Value::is_object) => {
            let mut names: Vec<String> = declared.iter().map(|t| t.name.clone()).collect();
            if names.is_empty() || !names.iter().all(|n| rows[0].get(n).is_some()) {
                names = rows[0].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
            }
            names
                .iter()
                .map(|n| {
                    let column: Vec<Value> =
                        rows.iter().map(|r| r.get(n).cloned().unwrap_or(Value::Null)).collect();
                    tensor(n, &Value::Array(column), hint(n))
                })
                .collect()
        }
        Value::Object(fields) => fields.iter().map(|(k, v)| tensor(k, v, hint(k))).collect(),
        other => {
            let name = declared.first().map_or("output-0", |t| t.name.as_str());
            Ok(vec![tensor(name, other, hint(name))?])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The swagger 2 document cairn's replica serves for a decorated run() (the schemas are what
    /// inference_schema 1.8 writes for these samples).
    fn swagger(input: Value, output: Value) -> Value {
        json!({"swagger": "2.0", "definitions": {"ServiceInput": input, "ServiceOutput": output,
               "ErrorResponse": {"type": "object"}}})
    }

    fn numpy_input() -> Value {
        json!({"type": "object", "properties": {
            "data": {"type": "array", "items": {"type": "array", "items": {"type": "number", "format": "double"}},
                     "format": "numpy.ndarray"},
            "scale": {"type": "number", "format": "double"}},
            "example": {"data": [[1.0, 2.0, 3.0]], "scale": 1.0}})
    }

    fn req(body: Value) -> InferRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn a_numpy_parameter_is_a_tensor_and_scalars_come_from_parameters() {
        let output = json!({"type": "array", "items": {"type": "number", "format": "double"},
                            "example": [5.0], "format": "numpy.ndarray"});
        let s = Signature::from_script_swagger(&swagger(numpy_input(), output)).unwrap();
        assert_eq!(
            s.inputs,
            [TensorMetadata { name: "data".into(), datatype: "FP64".into(), shape: vec![-1, 3] }]
        );
        assert_eq!(
            s.outputs,
            [TensorMetadata { name: "output-0".into(), datatype: "FP64".into(), shape: vec![-1] }]
        );
        let call = s.script.clone().unwrap();
        assert_eq!(call, ScriptCall { table: None, parameters: vec!["scale".into()] });
        let r = req(json!({"inputs": [{"name": "data", "shape": [2, 3], "datatype": "FP64",
                                       "data": [1, 2, 3, 4, 5, 6]}], "parameters": {"scale": 2, "other": 1}}));
        s.check(&r).unwrap();
        let body: Value = serde_json::from_str(&call.body(&s, &r)).unwrap();
        assert_eq!(body, json!({"data": [[1, 2, 3], [4, 5, 6]], "scale": 2}));
        // The sample's other sizes are enforced before anything reaches run().
        let wrong =
            req(json!({"inputs": [{"name": "data", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}));
        assert!(s.check(&wrong).unwrap_err().contains("shape [1, 2] does not match the signature's [-1, 3]"));
    }

    #[test]
    fn a_dataframe_parameter_is_its_columns_sent_as_rows_in_column_order() {
        let input = json!({"type": "object", "properties": {"df": {"type": "array", "format": "pandas.DataFrame:records",
            "items": {"type": "object", "required": ["b", "a", "c"], "properties": {
                "a": {"type": "number", "format": "double"}, "b": {"type": "integer", "format": "int64"},
                "c": {"type": "string"}}}}}, "example": {"df": [{"b": 2, "a": 1.0, "c": "x"}]}});
        let s = Signature::from_script_swagger(&swagger(input, json!({"type": "object"}))).unwrap();
        assert!(s.columns);
        let names: Vec<(&str, &str)> =
            s.inputs.iter().map(|t| (t.name.as_str(), t.datatype.as_str())).collect();
        assert_eq!(names, [("b", "INT64"), ("a", "FP64"), ("c", "BYTES")]);
        assert!(s.outputs.is_empty());
        let r = req(json!({"inputs": [
            {"name": "a", "shape": [2], "datatype": "FP64", "data": [1.5, 2.5]},
            {"name": "c", "shape": [2], "datatype": "BYTES", "data": ["x", "y"]},
            {"name": "b", "shape": [2], "datatype": "INT64", "data": [1, 2]}]}));
        s.check(&r).unwrap();
        let body = s.script.as_ref().unwrap().body(&s, &r);
        assert_eq!(body, r#"{"df":[{"b":1,"a":1.5,"c":"x"},{"b":2,"a":2.5,"c":"y"}]}"#);
    }

    #[test]
    fn scripts_without_tensors_say_why() {
        let generic = json!({"type": "object", "example": {}});
        assert!(Signature::from_script_swagger(&swagger(generic.clone(), generic.clone()))
            .unwrap_err()
            .contains("declares no input schema"));
        assert!(Signature::from_script_swagger(&json!({"openapi": "3.0.1"}))
            .unwrap_err()
            .contains("no input schema"));
        let scalars = json!({"type": "object", "properties": {"text": {"type": "string"}}});
        assert!(Signature::from_script_swagger(&swagger(scalars, generic.clone()))
            .unwrap_err()
            .contains("none of run()'s parameters (text) is an array or a DataFrame"));
        let table =
            json!({"type": "array", "items": {"type": "object", "properties": {"a": {"type": "number"}}}});
        let mixed = json!({"type": "object", "properties": {"df": table, "x": {"type": "array", "items": {"type": "integer"}}}});
        assert!(Signature::from_script_swagger(&swagger(mixed, generic.clone()))
            .unwrap_err()
            .contains("could not be told apart"));
        let split = json!({"type": "object", "properties": {"df": {"type": "array", "format": "pandas.DataFrame:split",
            "items": {"type": "object", "properties": {"a": {"type": "number"}}}}}});
        assert!(Signature::from_script_swagger(&swagger(split, generic))
            .unwrap_err()
            .contains("orient \"split\""));
        // OpenAPI 3 keeps its schemas under components.
        let v3 = json!({"openapi": "3.0.1", "components": {"schemas": {"ServiceInput": numpy_input()}}});
        assert_eq!(Signature::from_script_swagger(&v3).unwrap().inputs[0].name, "data");
    }

    #[test]
    fn answers_become_tensors() {
        let declared = [TensorMetadata { name: "output-0".into(), datatype: "FP32".into(), shape: vec![-1] }];
        assert_eq!(
            outputs_of(&json!([5.5, 6]), &declared).unwrap(),
            [json!({"name": "output-0", "datatype": "FP32", "shape": [2], "data": [5.5, 6]})]
        );
        // Undeclared: the answer's own types; a JSON string holding the result is parsed.
        assert_eq!(
            outputs_of(&json!("[[1, 2], [3, 4]]"), &[]).unwrap(),
            [json!({"name": "output-0", "datatype": "INT64", "shape": [2, 2], "data": [1, 2, 3, 4]})]
        );
        assert_eq!(
            outputs_of(&json!({"label": ["a", "b"], "p": [0.5, 1]}), &[]).unwrap(),
            [
                json!({"name": "label", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}),
                json!({"name": "p", "datatype": "FP64", "shape": [2], "data": [0.5, 1]})
            ]
        );
        assert_eq!(
            outputs_of(&json!([{"y": 1}, {"y": 2}]), &[]).unwrap(),
            [json!({"name": "y", "datatype": "INT64", "shape": [2], "data": [1, 2]})]
        );
        assert_eq!(
            outputs_of(&json!("done"), &[]).unwrap(),
            [json!({"name": "output-0", "datatype": "BYTES", "shape": [1], "data": ["done"]})]
        );
        assert!(outputs_of(&json!([[1], [2, 3]]), &[]).unwrap_err().contains("not a rectangular"));
        assert!(outputs_of(&json!([1, "a"]), &[]).unwrap_err().contains("mixes types"));
        assert!(outputs_of(&Value::Null, &[]).unwrap_err().contains("answered null"));
    }
}
