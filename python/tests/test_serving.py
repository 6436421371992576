"""``cairn.serving``: Model.get_model_path over the two model layouts, and the request/response
objects a @rawhttp run() sees (pure logic, in process)."""

from __future__ import annotations

import copy
import importlib
import json
import os
import pickle
import sys
import tempfile
import unittest
from unittest import mock

from cairn._scoring import query_arguments
from cairn import serving
from cairn.serving import AMLRequest, AMLResponse, Model, ModelNotFoundError

# The azureml layer sits next to cairn inside replicas; here it is found the same way.
AZUREML_COMPAT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "azureml_compat")


def touch(path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("x")
    return path


class GetModelPathTest(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.root = os.path.join(self.tmp.name, "azureml-models")

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def with_model_dir(self, path: str) -> "mock._patch[dict]":
        return mock.patch.dict(os.environ, {"AZUREML_MODEL_DIR": path})

    def test_one_model_layout_returns_its_single_file(self) -> None:
        pkl = touch(os.path.join(self.root, "wine_model", "1", "model.pkl"))
        with self.with_model_dir(os.path.join(self.root, "wine_model", "1")):
            self.assertEqual(Model.get_model_path("wine_model"), pkl)
            self.assertEqual(Model.get_model_path("wine_model", 1), pkl)
            with self.assertRaisesRegex(ModelNotFoundError, "no version 2 here"):
                Model.get_model_path("wine_model", 2)
            with self.assertRaisesRegex(ModelNotFoundError, "'other' not found"):
                Model.get_model_path("other")

    def test_several_models_layout_picks_the_highest_version_or_the_one_asked(self) -> None:
        touch(os.path.join(self.root, "wine_model", "2", "model.pkl"))
        v10 = touch(os.path.join(self.root, "wine_model", "10", "model.pkl"))
        enc = touch(os.path.join(self.root, "encoder", "1", "enc", "vocab.txt"))
        with self.with_model_dir(self.root):
            self.assertEqual(Model.get_model_path("wine_model"), v10)  # numeric, not lexical order
            self.assertEqual(Model.get_model_path("wine_model", 2),
                             os.path.join(self.root, "wine_model", "2", "model.pkl"))
            self.assertEqual(Model.get_model_path("encoder"), os.path.dirname(enc))
            with self.assertRaisesRegex(ModelNotFoundError, r"no version 3 .*versions: 2, 10"):
                Model.get_model_path("wine_model", 3)

    def test_several_models_linked_as_cairn_lays_them_out_are_found_by_name(self) -> None:
        # Cairn's several-model AZUREML_MODEL_DIR: NAME/VERSION links to the shared version folders.
        shared = os.path.join(self.tmp.name, "model")
        coef = touch(os.path.join(shared, "lin", "3", "coef.json"))
        touch(os.path.join(shared, "enc", "1", "vocab.txt"))
        touch(os.path.join(shared, "enc", "1", "merges.txt"))
        for name, version in (("lin", "3"), ("enc", "1")):
            os.makedirs(os.path.join(self.root, name))
            os.symlink(os.path.join(shared, name, version), os.path.join(self.root, name, version))
        with self.with_model_dir(self.root):
            self.assertEqual(Model.get_model_path("lin"), os.path.join(self.root, "lin", "3", "coef.json"))
            self.assertEqual(os.path.realpath(Model.get_model_path("lin", 3)), os.path.realpath(coef))
            self.assertEqual(Model.get_model_path("enc"), os.path.join(self.root, "enc", "1"))
            with self.assertRaisesRegex(ModelNotFoundError, r"'wine' not found .*models deployed here: enc:1, lin:3\)"):
                Model.get_model_path("wine")
            with self.assertRaisesRegex(ModelNotFoundError, r"model 'lin' has no version 1 .*versions: 3"):
                Model.get_model_path("lin", 1)

    def test_the_one_model_layout_names_its_model_when_another_is_asked(self) -> None:
        touch(os.path.join(self.root, "lin", "2", "coef.json"))
        with self.with_model_dir(os.path.join(self.root, "lin", "2")):
            with self.assertRaisesRegex(ModelNotFoundError, r"'enc' not found .*models deployed here: lin:2\)"):
                Model.get_model_path("enc")

    def test_a_version_folder_with_several_files_is_returned_itself(self) -> None:
        touch(os.path.join(self.root, "m", "4", "MLmodel"))
        touch(os.path.join(self.root, "m", "4", "model.pkl"))
        with self.with_model_dir(os.path.join(self.root, "m", "4")):
            self.assertEqual(Model.get_model_path("m"), os.path.join(self.root, "m", "4"))

    def test_names_that_could_leave_the_model_folder_are_refused(self) -> None:
        touch(os.path.join(self.root, "m", "1", "model.pkl"))
        with self.with_model_dir(self.root):
            for bad in ("../m", "m/1", "..", "", "/etc"):
                with self.assertRaises(ValueError, msg=bad):
                    Model.get_model_path(bad)
            with self.assertRaisesRegex(ValueError, "version should be an int"):
                Model.get_model_path("m", "1")  # type: ignore[arg-type]

    def test_without_model_dir_the_error_says_so(self) -> None:
        with mock.patch.dict(os.environ, {}, clear=True):
            with self.assertRaisesRegex(ModelNotFoundError, "AZUREML_MODEL_DIR is not set"):
                Model.get_model_path("m")


class AzureImportsTest(unittest.TestCase):
    def test_azure_contrib_services_modules_are_cairn_serving_itself(self) -> None:
        # Same objects, not copies: the worker recognises a returned response by isinstance and
        # @rawhttp by a flag that cairn.serving reads.
        with mock.patch.object(sys, "path", [AZUREML_COMPAT] + sys.path):
            request = importlib.import_module("azureml.contrib.services.aml_request")
            response = importlib.import_module("azureml.contrib.services.aml_response")
        self.assertIs(request.AMLRequest, serving.AMLRequest)
        self.assertIs(request.rawhttp, serving.rawhttp)
        self.assertIs(response.AMLResponse, serving.AMLResponse)


class RequestResponseTest(unittest.TestCase):
    def test_request_exposes_what_flask_scripts_use(self) -> None:
        req = AMLRequest("POST", "/score", "a=1&a=2&b=", {"Content-Type": "application/json", "X-Id": "7"},
                         b'{"k": [1]}')
        self.assertTrue(req.is_json)
        self.assertEqual(req.get_json(), {"k": [1]})
        self.assertEqual(req.json, {"k": [1]})
        self.assertEqual(req.get_data(as_text=True), '{"k": [1]}')
        self.assertEqual(req.headers["x-id"], "7")
        self.assertEqual(req.args.getlist("a"), ["1", "2"])
        self.assertEqual(req.args.get("b"), "")
        plain = AMLRequest("POST", "/score", "", {}, b"{}", "text/plain")
        with self.assertRaises(ValueError):
            plain.get_json()
        self.assertIsNone(plain.get_json(silent=True))
        self.assertEqual(plain.get_json(force=True), {})

    def test_headers_method_and_body_match_werkzeug(self) -> None:
        headers = {"content-type": "application/json", "x-ms-client-request-id": "r1", "x-count": "3"}
        req = AMLRequest("post", "/score", "", headers, b'{"k": 1}')
        self.assertEqual(req.method, "POST")
        self.assertEqual((req.path, req.full_path, req.query_string), ("/score", "/score?", b""))
        h = req.headers
        # Names as Flask spells them, lookups in any case, (name, value) pairs when iterated.
        self.assertEqual(dict(h), {"Content-Type": "application/json", "X-Ms-Client-Request-Id": "r1",
                                   "X-Count": "3"})
        self.assertEqual(list(h)[1], ("X-Ms-Client-Request-Id", "r1"))
        self.assertEqual((h["X-MS-CLIENT-REQUEST-ID"], h.get("x-missing"), h.get("x-missing", "d")),
                         ("r1", None, "d"))
        self.assertEqual((h.get("X-Count", type=int), h.get("Content-Type", 0, type=int)), (3, 0))
        self.assertEqual((h.getlist("x-count"), h.getlist("x-missing"), h.getlist("x-count", type=int)),
                         (["3"], [], [3]))
        self.assertEqual((list(h.keys())[0], list(h.values())[0], len(h), "CONTENT-TYPE" in h),
                         ("Content-Type", "application/json", 3, True))
        # werkzeug's parameter order: get_data(True) is cache=True and still bytes.
        self.assertEqual((req.get_data(True), req.get_data(as_text=True)), (b'{"k": 1}', '{"k": 1}'))
        self.assertEqual((req.get_json(True, False, True), req.get_json(cache=False)), ({"k": 1}, {"k": 1}))
        with self.assertRaises(ValueError):
            AMLRequest("POST", "/score", "", {}, b"{bad", "application/json").get_json()

    def test_args_behave_like_werkzeugs_immutable_multidict(self) -> None:
        args = AMLRequest("GET", "/score", "a=1&a=2&b=&c&n=x&s=a+b%21", {}, b"").args
        # First values wherever a plain mapping is seen; every value through getlist/to_dict.
        first = {"a": "1", "b": "", "c": "", "n": "x", "s": "a b!"}
        self.assertEqual(dict(args), first)
        self.assertEqual(json.loads(json.dumps(args)), first)
        self.assertEqual(json.loads(AMLResponse({"args": args}, 200, json_str=True).body), {"args": first})
        self.assertEqual((args["a"], len(args), list(args), "a" in args, "z" in args),
                         ("1", 5, list(first), True, False))
        self.assertEqual((list(args.keys()), list(args.values()), list(args.items())),
                         (list(first), list(first.values()), list(first.items())))
        self.assertEqual(list(args.items(multi=True))[:2], [("a", "1"), ("a", "2")])
        self.assertEqual(args.to_dict(), first)
        self.assertEqual(args.to_dict(flat=False)["a"], ["1", "2"])
        self.assertEqual(list(args.lists())[0], ("a", ["1", "2"]))
        self.assertEqual((args.getlist("a"), args.getlist("z"), args.getlist("a", type=int)),
                         (["1", "2"], [], [1, 2]))
        self.assertEqual(args.getlist("n", type=int), [])
        # get(key, default, type): a value that type rejects gives the default, as in werkzeug.
        self.assertEqual((args.get("a", type=int), args.get("n", 7, type=int), args.get("z"), args.get("z", 3)),
                         (1, 7, None, 3))
        with self.assertRaises(KeyError):
            args["z"]
        for mutate in (lambda: args.__setitem__("a", "3"), lambda: args.update(a="3"), lambda: args.pop("a"),
                       lambda: args.setdefault("z", "1"), args.clear, args.popitem, lambda: args.__delitem__("a")):
            with self.assertRaises(TypeError):
                mutate()
        self.assertEqual(dict(args), first)
        self.assertEqual(pickle.loads(pickle.dumps(args)).getlist("a"), ["1", "2"])
        self.assertEqual(copy.deepcopy(args).to_dict(flat=False), args.to_dict(flat=False))
        self.assertEqual(dict(AMLRequest("GET", "/score", "", {}, b"").args), {})

    def test_response_bodies_and_headers(self) -> None:
        self.assertEqual(AMLResponse(None, 204).body, b"{}")
        r = AMLResponse({"a": 1}, 200, json_str=True)
        self.assertEqual((json.loads(r.body), r.content_type), ({"a": 1}, "application/json"))
        r = AMLResponse("<b>hi</b>", 200, {"Content-Type": "text/plain", "X-A": "1 ,2"})
        self.assertEqual((r.body, r.content_type, r.headers["X-A"]), (b"<b>hi</b>", "text/plain", "1, 2"))
        self.assertNotIn("Content-Type", r.headers)

    def test_query_values_are_json_when_they_parse(self) -> None:
        self.assertEqual(query_arguments("a=1&b=%5B1%2C2%5D&c=x&d=null&c=y&e=%7B%7D"),
                         {"a": 1, "b": [1, 2], "c": ["x", "y"], "d": None, "e": {}})


if __name__ == "__main__":
    unittest.main()
