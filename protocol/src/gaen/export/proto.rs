//! The protobuf messages of the export format, hand-written for `prost` (spec §3).
//!
//! Every field is proto2 `optional`, hence `Option`. Unknown fields are skipped by `prost`, so old
//! files whose `SignatureInfo` still carries the reserved fields 1 and 2 decode fine.

use std::fmt;

/// The protobuf after the 16-byte header of `export.bin`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TemporaryExposureKeyExport {
    /// Unix seconds.
    #[prost(fixed64, optional, tag = "1")]
    pub start_timestamp: Option<u64>,
    /// Unix seconds.
    #[prost(fixed64, optional, tag = "2")]
    pub end_timestamp: Option<u64>,
    #[prost(string, optional, tag = "3")]
    pub region: Option<String>,
    #[prost(int32, optional, tag = "4")]
    pub batch_num: Option<i32>,
    #[prost(int32, optional, tag = "5")]
    pub batch_size: Option<i32>,
    #[prost(message, repeated, tag = "6")]
    pub signature_infos: Vec<SignatureInfo>,
    #[prost(message, repeated, tag = "7")]
    pub keys: Vec<TemporaryExposureKey>,
    #[prost(message, repeated, tag = "8")]
    pub revised_keys: Vec<TemporaryExposureKey>,
}

/// Which key signed the file. Fields 1 and 2 are reserved (old files still carry field 2).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SignatureInfo {
    #[prost(string, optional, tag = "3")]
    pub verification_key_version: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub verification_key_id: Option<String>,
    /// OID; `"1.2.840.10045.4.3.2"` = ECDSA P-256 with SHA-256.
    #[prost(string, optional, tag = "5")]
    pub signature_algorithm: Option<String>,
}

/// One published key. `Debug` does not print `key_data`.
#[derive(Clone, PartialEq, ::prost::Message)]
#[prost(skip_debug)]
pub struct TemporaryExposureKey {
    /// 16 bytes.
    #[prost(bytes = "vec", optional, tag = "1")]
    pub key_data: Option<Vec<u8>>,
    /// Deprecated, still present in many files.
    #[prost(int32, optional, tag = "2")]
    pub transmission_risk_level: Option<i32>,
    #[prost(int32, optional, tag = "3")]
    pub rolling_start_interval_number: Option<i32>,
    #[prost(int32, optional, tag = "4", default = "144")]
    pub rolling_period: Option<i32>,
    /// The `ReportType` enum; enums and `int32` share the varint wire encoding.
    #[prost(int32, optional, tag = "5")]
    pub report_type: Option<i32>,
    /// Zigzag (`sint32`).
    #[prost(sint32, optional, tag = "6")]
    pub days_since_onset_of_symptoms: Option<i32>,
}

impl fmt::Debug for TemporaryExposureKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemporaryExposureKey")
            .field(
                "key_data",
                &self
                    .key_data
                    .as_ref()
                    .map(|d| format!("<redacted {} bytes>", d.len())),
            )
            .field("transmission_risk_level", &self.transmission_risk_level)
            .field(
                "rolling_start_interval_number",
                &self.rolling_start_interval_number,
            )
            .field("rolling_period", &self.rolling_period)
            .field("report_type", &self.report_type)
            .field(
                "days_since_onset_of_symptoms",
                &self.days_since_onset_of_symptoms,
            )
            .finish()
    }
}

/// The whole of `export.sig`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TEKSignatureList {
    #[prost(message, repeated, tag = "1")]
    pub signatures: Vec<TEKSignature>,
}

/// One signature over `export.bin`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TEKSignature {
    #[prost(message, optional, tag = "1")]
    pub signature_info: Option<SignatureInfo>,
    #[prost(int32, optional, tag = "2")]
    pub batch_num: Option<i32>,
    #[prost(int32, optional, tag = "3")]
    pub batch_size: Option<i32>,
    /// ASN.1 DER ECDSA signature.
    #[prost(bytes = "vec", optional, tag = "4")]
    pub signature: Option<Vec<u8>>,
}
