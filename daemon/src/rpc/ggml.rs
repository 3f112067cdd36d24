//! ggml's RPC backend, reached through ggml's backend registry (`ggml_backend_reg_by_name("RPC")`
//! and the functions it hands out by name), as llama.cpp's own tools do. That needs no symbol
//! of `ggml-rpc.h` at link time, so a build without `GGML_RPC=ON` still links and says at run
//! time what it lacks.
//!
//! It calls ggml directly, so it allows `unsafe`; each block says why it is sound.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char};

use llama_cpp_sys_2 as sys;

/// A device llama.cpp can place layers on, by its index in ggml's device list.
#[derive(Debug, Clone)]
pub struct Device {
    pub index: usize,
    pub name: String,
    pub free: u64,
    pub total: u64,
}

/// `ggml_backend_reg_t ggml_backend_rpc_add_server(const char * endpoint)`
type AddServer = unsafe extern "C" fn(*const c_char) -> sys::ggml_backend_reg_t;
/// `void ggml_backend_rpc_start_server(endpoint, cache_dir, n_threads, n_devices, devices)`
type StartServer = unsafe extern "C" fn(
    *const c_char,
    *const c_char,
    usize,
    usize,
    *mut sys::ggml_backend_dev_t,
) -> ();

const MISSING: &str = "this build of whale has no llama.cpp RPC backend (build it with GGML_RPC=ON, as the repository's .cargo/config.toml does)";

/// The RPC backend's function `name`.
fn proc_address(name: &CStr) -> Result<*mut std::ffi::c_void, String> {
    // SAFETY: both take NUL-terminated names and return null when absent.
    let address = unsafe {
        let reg = sys::ggml_backend_reg_by_name(c"RPC".as_ptr());
        if reg.is_null() {
            return Err(MISSING.to_owned());
        }
        sys::ggml_backend_reg_get_proc_address(reg, name.as_ptr())
    };
    if address.is_null() {
        return Err(MISSING.to_owned());
    }
    Ok(address)
}

/// Adds the RPC server at `endpoint` (`host:port`) to ggml's devices; the devices it serves.
/// ggml connects to it now, and aborts the process if it cannot: check it is reachable first.
pub fn add_server(endpoint: &str) -> Result<Vec<Device>, String> {
    let address = proc_address(c"ggml_backend_rpc_add_server")?;
    // SAFETY: the registry hands out this function under this name with this signature.
    let add: AddServer = unsafe { std::mem::transmute(address) };
    let endpoint = CString::new(endpoint).map_err(|_| "NUL in a worker address".to_owned())?;
    // SAFETY: a valid C string; ggml keeps its own copy.
    let reg = unsafe { add(endpoint.as_ptr()) };
    if reg.is_null() {
        return Err(format!(
            "llama.cpp could not add {}",
            endpoint.to_string_lossy()
        ));
    }
    // SAFETY: a registry from ggml; registering makes its devices part of ggml's list.
    unsafe { sys::ggml_backend_register(reg) };
    let count = unsafe { sys::ggml_backend_reg_dev_count(reg) };
    let mut devices = Vec::new();
    for i in 0..count {
        // SAFETY: `i` is below the registry's device count.
        let device = unsafe { sys::ggml_backend_reg_dev_get(reg, i) };
        devices.push(describe(device)?);
    }
    Ok(devices)
}

/// A device's index in ggml's list, name and memory.
fn describe(device: sys::ggml_backend_dev_t) -> Result<Device, String> {
    // SAFETY: indices below the count; devices from ggml.
    let index = (0..unsafe { sys::ggml_backend_dev_count() })
        .find(|&i| unsafe { sys::ggml_backend_dev_get(i) } == device)
        .ok_or("a device ggml does not list")?;
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: a device from ggml; out-pointers to locals.
    let name = unsafe {
        sys::ggml_backend_dev_memory(device, &raw mut free, &raw mut total);
        CStr::from_ptr(sys::ggml_backend_dev_name(device))
            .to_string_lossy()
            .into_owned()
    };
    Ok(Device {
        index,
        name,
        free: free as u64,
        total: total as u64,
    })
}

/// This process's devices that are not RPC clients: the CPU and any GPUs.
pub fn local_devices() -> Vec<Device> {
    // SAFETY: indices below the count.
    (0..unsafe { sys::ggml_backend_dev_count() })
        .map(|i| unsafe { sys::ggml_backend_dev_get(i) })
        .filter_map(|device| describe(device).ok())
        .filter(|device| !device.name.starts_with("RPC"))
        .collect()
}

/// Serves `devices` over ggml's RPC protocol on `endpoint`; does not return while it serves.
pub fn start_server(
    endpoint: &str,
    cache_dir: Option<&std::path::Path>,
    threads: usize,
    devices: &[Device],
) -> Result<(), String> {
    let address = proc_address(c"ggml_backend_rpc_start_server")?;
    // SAFETY: the registry hands out this function under this name with this signature.
    let start: StartServer = unsafe { std::mem::transmute(address) };
    let endpoint = CString::new(endpoint).map_err(|_| "NUL in the address".to_owned())?;
    let cache = cache_dir
        .map(|dir| CString::new(dir.to_string_lossy().into_owned()))
        .transpose()
        .map_err(|_| "NUL in the cache folder".to_owned())?;
    let mut handles: Vec<sys::ggml_backend_dev_t> = devices
        .iter()
        // SAFETY: indices from `local_devices`.
        .map(|device| unsafe { sys::ggml_backend_dev_get(device.index) })
        .collect();
    // SAFETY: valid C strings and a device array that outlive the call.
    unsafe {
        start(
            endpoint.as_ptr(),
            cache
                .as_ref()
                .map_or(std::ptr::null(), |cache| cache.as_ptr()),
            threads,
            handles.len(),
            handles.as_mut_ptr(),
        );
    }
    Err(format!(
        "llama.cpp's RPC server on {} stopped (its output says why)",
        endpoint.to_string_lossy()
    ))
}
