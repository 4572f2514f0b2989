// Makes the shared library importable as the Python module mtlkit._C; importing
// it runs the static TORCH_LIBRARY registrations of every op (torch.ops.mtlkit.*).
#ifdef MTLKIT_PYTHON_MODULE
#include <Python.h>

static struct PyModuleDef mtlkit_c_module = {
    PyModuleDef_HEAD_INIT, "_C", "mtlkit native ops (registered as torch.ops.mtlkit.*)", -1, nullptr,
    nullptr,               nullptr, nullptr, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&mtlkit_c_module); }
#endif
