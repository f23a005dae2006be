//! The bus and mock fixture of the BlueZ contract tests (`tests/bluez_contract.rs`): a private
//! `dbus-daemon`, python-dbusmock's `bluez5` template extended by `bluez_le.py`, the test's own
//! client connection to it, and the radio under test with its channels.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bluezone_protocol::{Aem, PeerId, RollingId, Rpi, Sighting};
use bluezoned::clock::Clock;
use bluezoned::radio::bluez::{BluezConfig, BluezRadio, CONNECT_LIMIT};
use bluezoned::radio::{Broadcast, Radio, RadioError, RadioIo};
use dbus::arg::{AppendAll, ReadAll, RefArg, Variant};
use dbus::blocking::stdintf::org_freedesktop_dbus::Properties;
use dbus::blocking::Connection;
use dbus::channel::Channel;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub const PYTHON: &str = "/usr/bin/python3";
pub const MOCK_IFACE: &str = "org.freedesktop.DBus.Mock";
pub const BLUEZ_MOCK_IFACE: &str = "org.bluez.Mock";
pub const ADAPTER_IFACE: &str = "org.bluez.Adapter1";
pub const DEVICE_IFACE: &str = "org.bluez.Device1";
pub const UUID_BLUEZONE: &str = "00004e56-0000-1000-8000-00805f9b34fb";
pub const UUID_GAEN: &str = "0000fd6f-0000-1000-8000-00805f9b34fb";
pub const UUID_IOS_SERVICE: &str = "00004e56-73f5-4bc4-a12f-17d1ad07a667";
pub const UUID_IOS_CHAR: &str = "00004e56-73f5-4bc4-a12f-17d1ad07a689";

/// The daemon's clock in these tests: receptions must carry exactly this time.
pub const NOW_S: i64 = 1_600_000_000;

pub struct FixedClock;
impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        NOW_S * 1000 + 250
    }
}

pub fn id(b: u8) -> RollingId {
    RollingId(std::array::from_fn(|i| b ^ (i as u8).wrapping_mul(17)))
}
pub fn rpi(b: u8) -> Rpi {
    Rpi(std::array::from_fn(|i| {
        b.wrapping_mul(7).wrapping_add(i as u8)
    }))
}
pub fn aem(b: u8) -> Aem {
    Aem([0x40, b, 0, 0])
}

// ---------------------------------------------------------------------------------------------
// Prerequisites, the process-wide bus address, logs.

pub fn missing_tools() -> Option<String> {
    let daemon = Command::new("dbus-daemon")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(daemon, Ok(s) if s.success()) {
        return Some("dbus-daemon is not installed (apt-get install dbus)".into());
    }
    let mock = Command::new(PYTHON)
        .args(["-c", "import dbusmock"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(mock, Ok(s) if s.success()) {
        return Some(format!(
            "{PYTHON} cannot import dbusmock (apt-get install python3-dbusmock)"
        ));
    }
    None
}

/// CI (`CI=true`) or `BLUEZONED_REQUIRE_DBUS_TESTS=1`: a missing tool fails the test instead of
/// skipping it, so a CI image without dbusmock cannot pass the contract tests by skipping them.
pub fn tools_required() -> bool {
    let set = |k: &str, v: &str| std::env::var(k).is_ok_and(|x| x.eq_ignore_ascii_case(v));
    set("CI", "true") || set("BLUEZONED_REQUIRE_DBUS_TESTS", "1")
}

/// Skips the test (with a message) when the tools are missing, or fails it where they are
/// required; otherwise serialises the tests.
macro_rules! setup {
    () => {{
        if let Some(why) = missing_tools() {
            if tools_required() {
                panic!(
                    "the BlueZ contract tests must run here (CI=true or \
                     BLUEZONED_REQUIRE_DBUS_TESTS=1), but {why}"
                );
            }
            println!("SKIPPED {}: {why}", module_path!());
            eprintln!("SKIPPED {}: {why}", module_path!());
            return;
        }
        serial()
    }};
}

pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    init_process();
    guard
}

/// The directory holding the bus socket; its path is fixed for the whole process.
pub fn socket_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::temp_dir().join(format!("bluezoned-bluez-test-{}", std::process::id()))
    })
}

pub fn bus_address() -> String {
    format!("unix:path={}", socket_dir().join("bus").display())
}

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

pub struct LogWriter;
impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        if std::env::var_os("BLUEZ_TEST_LOG").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

pub fn init_process() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // Before any libdbus connection exists (libdbus caches the address), with the other
        // tests of this binary waiting on the serial lock.
        std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", bus_address());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("bluezoned=debug"))
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .try_init();
    });
}

// ---------------------------------------------------------------------------------------------
// The private bus, the mock, and the test's own client connection.

pub struct Bus {
    daemon: Option<Child>,
    mock: Option<Child>,
    client: Option<Connection>,
}

pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

impl Bus {
    /// A bus with no bluetoothd on it.
    pub fn start() -> Bus {
        let dir = socket_dir();
        std::fs::create_dir_all(dir).expect("creating the socket directory");
        let socket = dir.join("bus");
        let _ = std::fs::remove_file(&socket);
        let conf = dir.join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .expect("writing the bus config");
        let daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--nopidfile"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting dbus-daemon");
        let client = wait_for("the private bus", Duration::from_secs(60), || {
            let mut ch = Channel::open_private(&bus_address()).ok()?;
            ch.register().ok()?;
            Some(Connection::from(ch))
        });
        Bus {
            daemon: Some(daemon),
            mock: None,
            client: Some(client),
        }
    }

    pub fn client(&self) -> &Connection {
        self.client.as_ref().expect("bus is running")
    }

    /// Starts bluetoothd's stand-in and waits until it owns org.bluez.
    pub fn start_mock(&mut self) {
        let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bluez/bluez_le.py");
        let log = std::fs::File::create(socket_dir().join("mock.log")).expect("mock log");
        let mock = Command::new(PYTHON)
            .args(["-m", "dbusmock", "--system", "--template"])
            .arg(&template)
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus_address())
            .stdout(log.try_clone().expect("mock log"))
            .stderr(log)
            .spawn()
            .expect("starting python3 -m dbusmock");
        self.mock = Some(mock);
        wait_for("the mock to own org.bluez", Duration::from_secs(60), || {
            let (has,): (bool,) = self
                .client()
                .with_proxy(
                    "org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    Duration::from_secs(2),
                )
                .method_call("org.freedesktop.DBus", "NameHasOwner", ("org.bluez",))
                .ok()?;
            has.then_some(())
        });
    }

    pub fn kill_mock(&mut self) {
        if let Some(mut m) = self.mock.take() {
            let _ = m.kill();
            let _ = m.wait();
        }
    }

    /// Kills the bus itself, then the mock.
    pub fn kill_all(&mut self) {
        self.client = None;
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        self.kill_mock();
        let _ = std::fs::remove_file(socket_dir().join("bus"));
    }

    pub fn call<A: AppendAll, R: ReadAll>(
        &self,
        dest: &str,
        path: &str,
        iface: &str,
        method: &str,
        args: A,
    ) -> R {
        self.try_call(dest, path, iface, method, args)
            .unwrap_or_else(|e| panic!("{iface}.{method} on {path}: {e}"))
    }

    pub fn try_call<A: AppendAll, R: ReadAll>(
        &self,
        dest: &str,
        path: &str,
        iface: &str,
        method: &str,
        args: A,
    ) -> Result<R, dbus::Error> {
        self.client()
            .with_proxy(dest, path, Duration::from_secs(5))
            .method_call(iface, method, args)
    }

    pub fn add_adapter(&self, name: &str, max_adverts: u8, reported: u8) -> String {
        let (path,): (String,) = self.call(
            "org.bluez",
            "/",
            BLUEZ_MOCK_IFACE,
            "AddLEAdapter",
            (name, "bluezoned-test", max_adverts, reported),
        );
        path
    }

    pub fn add_device(&self, adapter: &str, address: &str) -> String {
        let (path,): (String,) = self.call(
            "org.bluez",
            "/",
            BLUEZ_MOCK_IFACE,
            "AddDevice",
            (adapter, address, "phone"),
        );
        path
    }

    pub fn set<T: dbus::arg::Arg + dbus::arg::Append>(
        &self,
        path: &str,
        iface: &str,
        name: &str,
        value: T,
    ) {
        self.client()
            .with_proxy("org.bluez", path, Duration::from_secs(5))
            .set(iface, name, value)
            .unwrap_or_else(|e| panic!("setting {iface}.{name} on {path}: {e}"));
    }

    pub fn set_rssi(&self, dev: &str, rssi: i16) {
        self.set(dev, DEVICE_IFACE, "RSSI", rssi);
    }

    pub fn set_manufacturer_data(&self, dev: &str, company: u16, data: &[u8]) {
        let map: HashMap<u16, Variant<Vec<u8>>> =
            HashMap::from([(company, Variant(data.to_vec()))]);
        self.set(dev, DEVICE_IFACE, "ManufacturerData", map);
    }

    pub fn set_service_data(&self, dev: &str, uuid: &str, data: &[u8]) {
        let map: HashMap<String, Variant<Vec<u8>>> =
            HashMap::from([(uuid.to_string(), Variant(data.to_vec()))]);
        self.set(dev, DEVICE_IFACE, "ServiceData", map);
    }

    /// Gives the adapter at `path` the LEAdvertisingManager1 properties of BlueZ ≥ 5.56 that say
    /// whether it can set the advertising tx power: `SupportedFeatures` and, with `range`,
    /// `SupportedCapabilities` (`MinTxPower`, `MaxTxPower`). Without this call the adapter has
    /// neither, as with older BlueZ.
    pub fn set_adv_features(&self, path: &str, features: &[&str], range: Option<(i16, i16)>) {
        let features: Vec<String> = features.iter().map(|f| f.to_string()).collect();
        self.call::<_, ()>(
            "org.bluez",
            path,
            MOCK_IFACE,
            "AddProperty",
            (
                "org.bluez.LEAdvertisingManager1",
                "SupportedFeatures",
                Variant(features),
            ),
        );
        if let Some((min, max)) = range {
            let mut caps = dbus::arg::PropMap::new();
            caps.insert("MinTxPower".into(), Variant(Box::new(min)));
            caps.insert("MaxTxPower".into(), Variant(Box::new(max)));
            caps.insert("MaxAdvLen".into(), Variant(Box::new(31u8)));
            caps.insert("MaxScnRspLen".into(), Variant(Box::new(31u8)));
            self.call::<_, ()>(
                "org.bluez",
                path,
                MOCK_IFACE,
                "AddProperty",
                (
                    "org.bluez.LEAdvertisingManager1",
                    "SupportedCapabilities",
                    Variant(caps),
                ),
            );
        }
    }

    /// How often `method` was called on the mock object at `path`.
    pub fn calls(&self, path: &str, method: &str) -> usize {
        type Calls = Vec<(u64, Vec<Variant<Box<dyn RefArg>>>)>;
        let (calls,): (Calls,) =
            self.call("org.bluez", path, MOCK_IFACE, "GetMethodCalls", (method,));
        calls.len()
    }

    /// The filters `SetDiscoveryFilter` received on the adapter at `path`, in call order, each
    /// as key → value (strings as is, booleans and numbers as decimal).
    pub fn discovery_filters(&self, path: &str) -> Vec<HashMap<String, String>> {
        type Calls = Vec<(u64, Vec<Variant<Box<dyn RefArg>>>)>;
        let (calls,): (Calls,) = self.call(
            "org.bluez",
            path,
            MOCK_IFACE,
            "GetMethodCalls",
            ("SetDiscoveryFilter",),
        );
        fn scalar(v: &dyn RefArg) -> String {
            if let Some(s) = v.as_str() {
                return s.to_string();
            }
            if let Some(i) = v.as_i64() {
                return i.to_string();
            }
            match v.as_iter().and_then(|mut it| it.next().map(scalar)) {
                Some(s) => s,
                None => format!("{v:?}"),
            }
        }
        calls
            .iter()
            .map(|(_, args)| {
                let dict = &args.first().expect("SetDiscoveryFilter has an argument").0;
                let mut it = dict.as_iter().expect("the filter is a dict");
                let mut out = HashMap::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    out.insert(scalar(k), scalar(v));
                }
                out
            })
            .collect()
    }

    pub fn advertisements(&self, adapter: &str) -> Vec<Adv> {
        type Row = (
            String,
            dbus::Path<'static>,
            String,
            Vec<String>,
            HashMap<u16, Vec<u8>>,
            HashMap<String, Vec<u8>>,
            String,
            Vec<String>,
            Vec<i16>,
        );
        let (rows,): (Vec<Row>,) = self.call(
            "org.bluez",
            "/",
            BLUEZ_MOCK_IFACE,
            "GetAdvertisements",
            (adapter,),
        );
        rows.into_iter()
            .map(
                |(owner, path, kind, uuids, manufacturer, service_data, name, includes, tx)| Adv {
                    owner,
                    path: path.to_string(),
                    kind,
                    uuids,
                    manufacturer,
                    service_data,
                    name,
                    includes,
                    tx_power: tx.first().copied(),
                },
            )
            .collect()
    }

    pub fn registrations(&self, adapter: &str) -> u32 {
        let (n,): (u32,) = self.call(
            "org.bluez",
            "/",
            BLUEZ_MOCK_IFACE,
            "GetAdvertisementRegistrations",
            (adapter,),
        );
        n
    }

    /// How many registrations the adapter refused with "Maximum advertisements reached".
    pub fn refused_full(&self, adapter: &str) -> u32 {
        let (n,): (u32,) = self.call(
            "org.bluez",
            "/",
            BLUEZ_MOCK_IFACE,
            "GetAdvertisementsRefusedFull",
            (adapter,),
        );
        n
    }

    /// (owner, app path, characteristic path, UUID, flags) of registered GATT characteristics.
    pub fn characteristics(
        &self,
        adapter: &str,
    ) -> Vec<(String, String, String, String, Vec<String>)> {
        type Row = (
            String,
            dbus::Path<'static>,
            dbus::Path<'static>,
            String,
            Vec<String>,
        );
        let (rows,): (Vec<Row>,) = self.call(
            "org.bluez",
            "/",
            BLUEZ_MOCK_IFACE,
            "GetGattCharacteristics",
            (adapter,),
        );
        rows.into_iter()
            .map(|(o, a, c, u, f)| (o, a.to_string(), c.to_string(), u, f))
            .collect()
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.kill_all();
        // The bus config and the mock's log; BLUEZ_TEST_LOG keeps them for a look.
        if std::env::var_os("BLUEZ_TEST_LOG").is_none() {
            let _ = std::fs::remove_dir_all(socket_dir());
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Adv {
    pub owner: String,
    pub path: String,
    pub kind: String,
    pub uuids: Vec<String>,
    pub manufacturer: HashMap<u16, Vec<u8>>,
    pub service_data: HashMap<String, Vec<u8>>,
    pub name: String,
    pub includes: Vec<String>,
    /// `TxPower` (BlueZ ≥ 5.56): the transmit power the advertisement asks the adapter for.
    pub tx_power: Option<i16>,
}

impl Adv {
    pub fn is_bluezone(&self, id: &RollingId) -> bool {
        self.kind == "peripheral"
            && self.uuids == [UUID_BLUEZONE]
            && self.manufacturer == HashMap::from([(0x22B5, id.0.to_vec())])
            && self.service_data.is_empty()
            && self.name.is_empty()
            && self.includes.is_empty()
    }
    pub fn is_gaen(&self, rpi: &Rpi, aem: &Aem) -> bool {
        let mut data = rpi.0.to_vec();
        data.extend_from_slice(&aem.0);
        self.kind == "broadcast"
            && self.uuids == [UUID_GAEN]
            && self.service_data == HashMap::from([(UUID_GAEN.to_string(), data)])
            && self.manufacturer.is_empty()
            && self.name.is_empty()
            && self.includes.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// The radio under test.

pub fn test_config() -> BluezConfig {
    BluezConfig {
        adapter: Some("hci0".into()),
        discovery_stall_timeout: Duration::from_secs(60),
        alternate_period: Duration::from_millis(300),
        ios_read_interval: Duration::ZERO,
        ios_read_timeout: Duration::from_secs(5),
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_millis(400),
        // The whole budget: a slow mock on a loaded machine is slow, not absent.
        connect_timeout: CONNECT_LIMIT,
        // Not the host's /etc/bluetooth/main.conf: privacy is off unless a test writes one.
        main_conf: PathBuf::from("/nonexistent/bluezoned-test/main.conf"),
        ..BluezConfig::default()
    }
}

pub struct Harness {
    pub rt: tokio::runtime::Runtime,
    pub broadcast: watch::Sender<Broadcast>,
    pub heard: mpsc::Receiver<Sighting>,
    pub shutdown: CancellationToken,
    pub task: Option<tokio::task::JoinHandle<Result<(), RadioError>>>,
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

impl Harness {
    pub fn start(cfg: BluezConfig, initial: Broadcast) -> Harness {
        let rt = runtime();
        let radio = rt
            .block_on(BluezRadio::connect(cfg, std::sync::Arc::new(FixedClock)))
            .expect("BluezRadio::connect against the mock");
        assert_eq!(radio.adapter(), "hci0");
        let (broadcast, broadcast_rx) = watch::channel(initial);
        let (heard_tx, heard) = mpsc::channel(4096);
        let shutdown = CancellationToken::new();
        let io = RadioIo {
            broadcast: broadcast_rx,
            heard: heard_tx,
            shutdown: shutdown.clone(),
        };
        let task = rt.spawn(Box::new(radio).run(io));
        Harness {
            rt,
            broadcast,
            heard,
            shutdown,
            task: Some(task),
        }
    }

    pub fn recv(&mut self, limit: Duration) -> Option<Sighting> {
        let heard = &mut self.heard;
        self.rt.block_on(async {
            tokio::time::timeout(limit, heard.recv())
                .await
                .ok()
                .flatten()
        })
    }

    /// The next reception whose peer is `peer` (others in between are returned too).
    pub fn recv_peer(&mut self, peer: PeerId, limit: Duration) -> (Sighting, Vec<Sighting>) {
        let start = Instant::now();
        let mut others = Vec::new();
        while let Some(left) = limit.checked_sub(start.elapsed()) {
            match self.recv(left) {
                Some(r) if r.peer == peer => return (r, others),
                Some(r) => others.push(r),
                None => break,
            }
        }
        panic!(
            "no reception of {peer:?} within {limit:?} (got {others:?})\nlogs:\n{}",
            logs()
        );
    }

    pub fn drain(&mut self) -> Vec<Sighting> {
        let mut out = Vec::new();
        while let Ok(r) = self.heard.try_recv() {
            out.push(r);
        }
        out
    }

    pub fn running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    pub fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().expect("running");
        let result = self
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await })
            .expect("the radio stops within 5 s of shutdown")
            .expect("the radio task did not panic");
        assert!(result.is_ok(), "radio ended with {result:?}");
    }
}

pub fn sighting(peer: PeerId, aem: Option<Aem>, rssi: i8, tx_power: Option<i8>) -> Sighting {
    Sighting {
        peer,
        aem,
        rssi,
        tx_power,
        time: NOW_S,
    }
}
