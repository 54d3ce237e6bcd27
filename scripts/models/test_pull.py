"""Tests of the model converters (python3 -m unittest scripts/models/test_pull.py)."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))

try:
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper, TensorProto
except ImportError:  # the test script installs them; skip elsewhere
    onnx = None

import pull


@unittest.skipIf(onnx is None, "numpy and onnx are not installed")
class FillWeights(unittest.TestCase):
    def light_model(self):
        """A 'light' graph as the onnx wheel ships them: weights stand in as ConstantOfShape."""
        shape = numpy_helper.from_array(np.array([4, 3, 3, 3], dtype=np.int64), "w__SHAPE")
        bias_shape = numpy_helper.from_array(np.array([4], dtype=np.int64), "b__SHAPE")
        nodes = [
            helper.make_node("ConstantOfShape", ["w__SHAPE"], ["w"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
            helper.make_node("ConstantOfShape", ["b__SHAPE"], ["b"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
            helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
        ]
        g = helper.make_graph(
            nodes, "light",
            # As in the wheel's graphs, the stand-ins' shapes are graph inputs too.
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
             helper.make_tensor_value_info("w__SHAPE", TensorProto.INT64, [4]),
             helper.make_tensor_value_info("b__SHAPE", TensorProto.INT64, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
            [shape, bias_shape],
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 9)])

    def test_real_values_win_over_stand_ins(self):
        m = self.light_model()
        m.graph.initializer.append(numpy_helper.from_array(np.full(4, 0.5, dtype=np.float32), "b"))
        out = pull.fill_weights(m, seed=1)
        inits = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
        self.assertTrue(np.all(inits["b"] == 0.5))
        self.assertEqual(sum(t.name == "b" for t in out.graph.initializer), 1)

    def test_scales_behind_unsqueeze_become_ones(self):
        shape = numpy_helper.from_array(np.array([3], dtype=np.int64), "s__SHAPE")
        axes = numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes")
        nodes = [
            helper.make_node("ConstantOfShape", ["s__SHAPE"], ["s"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
            helper.make_node("Unsqueeze", ["s", "axes"], ["s3"]),
            helper.make_node("Mul", ["x", "s3"], ["y"]),
        ]
        g = helper.make_graph(
            nodes, "scale",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 2, 2])],
            [shape, axes],
        )
        m = pull.fill_weights(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), seed=3)
        inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        self.assertTrue(np.all(inits["s"] == 1.0))

    def test_stand_ins_become_seeded_initializers(self):
        m = pull.fill_weights(self.light_model(), seed=7)
        onnx.checker.check_model(m)
        inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        self.assertEqual(inits["w"].shape, (4, 3, 3, 3))
        self.assertTrue(np.all(inits["b"] == 0))
        self.assertGreater(float(np.std(inits["w"])), 0.1)
        self.assertNotIn("w__SHAPE", inits)
        self.assertEqual([n.op_type for n in m.graph.node], ["Conv"])
        self.assertEqual([i.name for i in m.graph.input], ["x"])
        again = {t.name: numpy_helper.to_array(t) for t in pull.fill_weights(self.light_model(), seed=7).graph.initializer}
        self.assertTrue(np.array_equal(again["w"], inits["w"]), "the same seed gives the same weights")
        self.assertEqual(pull.input_side(m), 8)


if __name__ == "__main__":
    unittest.main()
