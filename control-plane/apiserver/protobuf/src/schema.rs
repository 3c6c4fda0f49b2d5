//! The protobuf shapes of the built-in types that clients send as protobuf, in a compact form
//! of our own: `Type: jsonName=fieldNumber[:kind][!] …`.
//!
//! Kinds: `s` string (the default), `i` integer, `b` bool, `y` bytes, `t` time, `mt` micro
//! time, `q` quantity, `io` int-or-string, `fv` managed-fields JSON, `m` / `my` / `mq` maps of
//! strings / bytes / quantities, a type name for a message, `[kind]` for a repeated field and
//! `^Type` for a message whose fields Kubernetes' JSON inlines into the parent. `!` keeps a
//! zero value (pointer and required fields); other zero scalars are left out, as the JSON
//! encoding's `omitempty` does.
//!
//! Field numbers are the wire contract of Kubernetes' API (`k8s.io/api`), checked against the
//! `k8s-pb` encodings in the tests. Types not listed are refused with a clear error rather than
//! guessed at.

/// The schema text.
pub const SCHEMA: &str = r#"
ObjectMeta: name=1 generateName=2 namespace=3 selfLink=4 uid=5 resourceVersion=6 generation=7:i creationTimestamp=8:t deletionTimestamp=9:t deletionGracePeriodSeconds=10:i! labels=11:m annotations=12:m ownerReferences=13:[OwnerReference] finalizers=14:[s] managedFields=17:[ManagedFieldsEntry]
OwnerReference: apiVersion=5! kind=1! name=3! uid=4! controller=6:b! blockOwnerDeletion=7:b!
ManagedFieldsEntry: manager=1 operation=2 apiVersion=3 time=4:t fieldsType=6 fieldsV1=7:fv subresource=8
LabelSelector: matchLabels=1:m matchExpressions=2:[LabelSelectorRequirement]
LabelSelectorRequirement: key=1! operator=2! values=3:[s]
FieldSelectorRequirement: key=1! operator=2! values=3:[s]
Condition: type=1! status=2! observedGeneration=3:i lastTransitionTime=4:t reason=5! message=6!

ConfigMap: metadata=1:ObjectMeta immutable=4:b! data=2:m binaryData=3:my
Secret: metadata=1:ObjectMeta immutable=5:b! data=2:my stringData=4:m type=3
Namespace: metadata=1:ObjectMeta spec=2:NamespaceSpec status=3:NamespaceStatus
NamespaceSpec: finalizers=1:[s]
NamespaceStatus: phase=1 conditions=2:[NamespaceCondition]
NamespaceCondition: type=1! status=2! lastTransitionTime=4:t reason=5 message=6
ServiceAccount: metadata=1:ObjectMeta secrets=2:[ObjectReference] imagePullSecrets=3:[LocalObjectReference] automountServiceAccountToken=4:b!
ObjectReference: kind=1 namespace=2 name=3 uid=4 apiVersion=5 resourceVersion=6 fieldPath=7
LocalObjectReference: name=1
Service: metadata=1:ObjectMeta spec=2:ServiceSpec status=3:ServiceStatus
ServiceSpec: ports=1:[ServicePort] selector=2:m clusterIP=3 clusterIPs=18:[s] type=4 externalIPs=5:[s] sessionAffinity=7 loadBalancerIP=8 loadBalancerSourceRanges=9:[s] externalName=10 externalTrafficPolicy=11 healthCheckNodePort=12:i publishNotReadyAddresses=13:b sessionAffinityConfig=14:SessionAffinityConfig ipFamilies=19:[s] ipFamilyPolicy=17! allocateLoadBalancerNodePorts=20:b! loadBalancerClass=21! internalTrafficPolicy=22! trafficDistribution=23!
ServicePort: name=1 protocol=2 appProtocol=6! port=3:i! targetPort=4:io nodePort=5:i
ServiceStatus: loadBalancer=1:LoadBalancerStatus conditions=2:[Condition]
LoadBalancerStatus: ingress=1:[LoadBalancerIngress]
LoadBalancerIngress: ip=1 hostname=2 ipMode=3! ports=4:[PortStatus]
PortStatus: port=1:i! protocol=2! error=3!
SessionAffinityConfig: clientIP=1:ClientIPConfig
ClientIPConfig: timeoutSeconds=1:i!
ResourceQuota: metadata=1:ObjectMeta spec=2:ResourceQuotaSpec status=3:ResourceQuotaStatus
ResourceQuotaSpec: hard=1:mq scopes=2:[s]
ResourceQuotaStatus: hard=1:mq used=2:mq

PodTemplateSpec: metadata=1:ObjectMeta spec=2:PodSpec
PodSpec: volumes=1:[Volume] initContainers=20:[Container] containers=2:[Container] restartPolicy=3 terminationGracePeriodSeconds=4:i! activeDeadlineSeconds=5:i! dnsPolicy=6 nodeSelector=7:m serviceAccountName=8 serviceAccount=9 automountServiceAccountToken=21:b! nodeName=10 hostNetwork=11:b hostPID=12:b hostIPC=13:b shareProcessNamespace=27:b! securityContext=14:PodSecurityContext imagePullSecrets=15:[LocalObjectReference] hostname=16 subdomain=17 schedulerName=19 tolerations=22:[Toleration] priorityClassName=24 priority=25:i! readinessGates=28:[PodReadinessGate] runtimeClassName=29! enableServiceLinks=30:b! preemptionPolicy=31! overhead=32:mq setHostnameAsFQDN=35:b! hostUsers=37:b! resources=40:ResourceRequirements
PodReadinessGate: conditionType=1!
PodSecurityContext: runAsUser=2:i! runAsGroup=6:i! runAsNonRoot=3:b! supplementalGroups=4:[i] supplementalGroupsPolicy=12! fsGroup=5:i! fsGroupChangePolicy=9! seLinuxChangePolicy=13!
Container: name=1! image=2 command=3:[s] args=4:[s] workingDir=5 ports=6:[ContainerPort] envFrom=19:[EnvFromSource] env=7:[EnvVar] resources=8:ResourceRequirements restartPolicy=24! volumeMounts=9:[VolumeMount] livenessProbe=10:Probe readinessProbe=11:Probe startupProbe=22:Probe terminationMessagePath=13 terminationMessagePolicy=20 imagePullPolicy=14 securityContext=15:SecurityContext stdin=16:b stdinOnce=17:b tty=18:b
SecurityContext: capabilities=1:Capabilities privileged=2:b! runAsUser=4:i! runAsGroup=8:i! runAsNonRoot=5:b! readOnlyRootFilesystem=6:b! allowPrivilegeEscalation=7:b! procMount=9!
Capabilities: add=1:[s] drop=2:[s]
ContainerPort: name=1 hostPort=2:i containerPort=3:i! protocol=4 hostIP=5
EnvVar: name=1! value=2 valueFrom=3:EnvVarSource
EnvVarSource: fieldRef=1:ObjectFieldSelector resourceFieldRef=2:ResourceFieldSelector configMapKeyRef=3:ConfigMapKeySelector secretKeyRef=4:SecretKeySelector
ConfigMapKeySelector: local=1:^LocalObjectReference key=2! optional=3:b!
SecretKeySelector: local=1:^LocalObjectReference key=2! optional=3:b!
ObjectFieldSelector: apiVersion=1 fieldPath=2!
ResourceFieldSelector: containerName=1 resource=2! divisor=3:q
EnvFromSource: prefix=1 configMapRef=2:ConfigMapEnvSource secretRef=3:SecretEnvSource
ConfigMapEnvSource: local=1:^LocalObjectReference optional=2:b!
SecretEnvSource: local=1:^LocalObjectReference optional=2:b!
ResourceRequirements: limits=1:mq requests=2:mq
VolumeMount: name=1! readOnly=2:b recursiveReadOnly=7! mountPath=3! subPath=4 mountPropagation=5! subPathExpr=6
Probe: handler=1:^ProbeHandler initialDelaySeconds=2:i timeoutSeconds=3:i periodSeconds=4:i successThreshold=5:i failureThreshold=6:i terminationGracePeriodSeconds=7:i!
ProbeHandler: exec=1:ExecAction httpGet=2:HTTPGetAction tcpSocket=3:TCPSocketAction grpc=4:GRPCAction
ExecAction: command=1:[s]
HTTPGetAction: path=1 port=2:io host=3 scheme=4 httpHeaders=5:[HTTPHeader]
HTTPHeader: name=1! value=2!
TCPSocketAction: port=1:io host=2
GRPCAction: port=1:i! service=2!
Toleration: key=1 operator=2 value=3 effect=4 tolerationSeconds=5:i!
Volume: name=1! source=2:^VolumeSource
VolumeSource: hostPath=1:HostPathVolumeSource emptyDir=2:EmptyDirVolumeSource secret=6:SecretVolumeSource persistentVolumeClaim=10:PersistentVolumeClaimVolumeSource configMap=19:ConfigMapVolumeSource
HostPathVolumeSource: path=1! type=2!
EmptyDirVolumeSource: medium=1 sizeLimit=2:q
SecretVolumeSource: secretName=1 items=2:[KeyToPath] defaultMode=3:i! optional=4:b!
ConfigMapVolumeSource: local=1:^LocalObjectReference items=2:[KeyToPath] defaultMode=3:i! optional=4:b!
KeyToPath: key=1! path=2! mode=3:i!
PersistentVolumeClaimVolumeSource: claimName=1! readOnly=2:b

Deployment: metadata=1:ObjectMeta spec=2:DeploymentSpec status=3:DeploymentStatus
DeploymentSpec: replicas=1:i! selector=2:LabelSelector template=3:PodTemplateSpec strategy=4:DeploymentStrategy minReadySeconds=5:i revisionHistoryLimit=6:i! paused=7:b progressDeadlineSeconds=9:i!
DeploymentStrategy: type=1 rollingUpdate=2:RollingUpdateDeployment
RollingUpdateDeployment: maxUnavailable=1:io maxSurge=2:io
DeploymentStatus: observedGeneration=1:i replicas=2:i updatedReplicas=3:i readyReplicas=7:i availableReplicas=4:i unavailableReplicas=5:i collisionCount=8:i!
Job: metadata=1:ObjectMeta spec=2:JobSpec status=3:JobStatus
JobSpec: parallelism=1:i! completions=2:i! activeDeadlineSeconds=3:i! backoffLimit=7:i! backoffLimitPerIndex=12:i! maxFailedIndexes=13:i! selector=4:LabelSelector manualSelector=5:b! template=6:PodTemplateSpec ttlSecondsAfterFinished=8:i! completionMode=9! suspend=10:b! podReplacementPolicy=14! managedBy=15!
JobStatus: conditions=1:[JobCondition] startTime=2:t completionTime=3:t active=4:i succeeded=5:i failed=6:i terminating=11:i! completedIndexes=7 failedIndexes=10! uncountedTerminatedPods=8:UncountedTerminatedPods ready=9:i!
JobCondition: type=1! status=2! lastProbeTime=3:t lastTransitionTime=4:t reason=5 message=6
UncountedTerminatedPods: succeeded=1:[s] failed=2:[s]
JobTemplateSpec: metadata=1:ObjectMeta spec=2:JobSpec
CronJob: metadata=1:ObjectMeta spec=2:CronJobSpec status=3:CronJobStatus
CronJobSpec: schedule=1! timeZone=8! startingDeadlineSeconds=2:i! concurrencyPolicy=3 suspend=4:b! jobTemplate=5:JobTemplateSpec successfulJobsHistoryLimit=6:i! failedJobsHistoryLimit=7:i!
CronJobStatus: active=1:[ObjectReference] lastScheduleTime=4:t lastSuccessfulTime=5:t
Scale: metadata=1:ObjectMeta spec=2:ScaleSpec status=3:ScaleStatus
ScaleSpec: replicas=1:i
ScaleStatus: replicas=1:i! selector=2

Role: metadata=1:ObjectMeta rules=2:[PolicyRule]
ClusterRole: metadata=1:ObjectMeta rules=2:[PolicyRule] aggregationRule=3:AggregationRule
AggregationRule: clusterRoleSelectors=1:[LabelSelector]
PolicyRule: verbs=1:[s] apiGroups=2:[s] resources=3:[s] resourceNames=4:[s] nonResourceURLs=5:[s]
RoleBinding: metadata=1:ObjectMeta subjects=2:[Subject] roleRef=3:RoleRef
ClusterRoleBinding: metadata=1:ObjectMeta subjects=2:[Subject] roleRef=3:RoleRef
Subject: kind=1! apiGroup=2 name=3! namespace=4
RoleRef: apiGroup=1! kind=2! name=3!

SelfSubjectAccessReview: metadata=1:ObjectMeta spec=2:SelfSubjectAccessReviewSpec status=3:SubjectAccessReviewStatus
SelfSubjectAccessReviewSpec: resourceAttributes=1:ResourceAttributes nonResourceAttributes=2:NonResourceAttributes
ResourceAttributes: namespace=1 verb=2 group=3 version=4 resource=5 subresource=6 name=7 fieldSelector=8:FieldSelectorAttributes labelSelector=9:LabelSelectorAttributes
FieldSelectorAttributes: rawSelector=1 requirements=2:[FieldSelectorRequirement]
LabelSelectorAttributes: rawSelector=1 requirements=2:[LabelSelectorRequirement]
NonResourceAttributes: path=1 verb=2
SubjectAccessReviewStatus: allowed=1:b! denied=4:b reason=2 evaluationError=3
SubjectAccessReview: metadata=1:ObjectMeta spec=2:SubjectAccessReviewSpec status=3:SubjectAccessReviewStatus
LocalSubjectAccessReview: metadata=1:ObjectMeta spec=2:SubjectAccessReviewSpec status=3:SubjectAccessReviewStatus
SubjectAccessReviewSpec: resourceAttributes=1:ResourceAttributes nonResourceAttributes=2:NonResourceAttributes user=3 groups=4:[s] uid=6
TokenReview: metadata=1:ObjectMeta spec=2:TokenReviewSpec status=3:TokenReviewStatus
TokenReviewSpec: token=1 audiences=2:[s]
TokenReviewStatus: authenticated=1:b user=2:UserInfo audiences=4:[s] error=3
SelfSubjectReview: metadata=1:ObjectMeta status=2:SelfSubjectReviewStatus
SelfSubjectReviewStatus: userInfo=1:UserInfo
UserInfo: username=1 uid=2 groups=3:[s]
SelfSubjectRulesReview: metadata=1:ObjectMeta spec=2:SelfSubjectRulesReviewSpec status=3:SubjectRulesReviewStatus
SelfSubjectRulesReviewSpec: namespace=1
SubjectRulesReviewStatus: resourceRules=1:[ResourceRule] nonResourceRules=2:[NonResourceRule] incomplete=3:b! evaluationError=4
ResourceRule: verbs=1:[s] apiGroups=2:[s] resources=3:[s] resourceNames=4:[s]
NonResourceRule: verbs=1:[s] nonResourceURLs=2:[s]
TokenRequest: metadata=1:ObjectMeta spec=2:TokenRequestSpec status=3:TokenRequestStatus
TokenRequestSpec: audiences=1:[s] expirationSeconds=4:i! boundObjectRef=3:BoundObjectReference
BoundObjectReference: kind=1 apiVersion=2 name=3 uid=4
TokenRequestStatus: token=1! expirationTimestamp=2:t
Eviction: metadata=1:ObjectMeta deleteOptions=2:DeleteOptions
DeleteOptions: gracePeriodSeconds=1:i! preconditions=2:Preconditions orphanDependents=3:b! propagationPolicy=4! dryRun=5:[s] ignoreStoreReadErrorWithClusterBreakingPotential=6:b!
Preconditions: uid=1! resourceVersion=2!
CertificateSigningRequest: metadata=1:ObjectMeta spec=2:CertificateSigningRequestSpec status=3:CertificateSigningRequestStatus
CertificateSigningRequestSpec: request=1:y signerName=7 expirationSeconds=8:i! usages=5:[s] username=2 uid=3 groups=4:[s]
CertificateSigningRequestStatus: conditions=1:[CertificateSigningRequestCondition] certificate=2:y
CertificateSigningRequestCondition: type=1! status=6! reason=2 message=3 lastUpdateTime=4:t lastTransitionTime=5:t
"#;

/// The message type of each top-level kind a client may send, by `apiVersion` and `kind`.
pub const KINDS: &[(&str, &str, &str)] = &[
    ("v1", "ConfigMap", "ConfigMap"),
    ("v1", "Secret", "Secret"),
    ("v1", "Namespace", "Namespace"),
    ("v1", "ServiceAccount", "ServiceAccount"),
    ("v1", "Service", "Service"),
    ("v1", "ResourceQuota", "ResourceQuota"),
    ("apps/v1", "Deployment", "Deployment"),
    ("batch/v1", "Job", "Job"),
    ("batch/v1", "CronJob", "CronJob"),
    ("autoscaling/v1", "Scale", "Scale"),
    ("rbac.authorization.k8s.io/v1", "Role", "Role"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", "RoleBinding"),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "ClusterRoleBinding",
    ),
    (
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        "SelfSubjectAccessReview",
    ),
    (
        "authorization.k8s.io/v1",
        "SelfSubjectRulesReview",
        "SelfSubjectRulesReview",
    ),
    (
        "authorization.k8s.io/v1",
        "SubjectAccessReview",
        "SubjectAccessReview",
    ),
    (
        "authorization.k8s.io/v1",
        "LocalSubjectAccessReview",
        "LocalSubjectAccessReview",
    ),
    (
        "authentication.k8s.io/v1",
        "SelfSubjectReview",
        "SelfSubjectReview",
    ),
    ("authentication.k8s.io/v1", "TokenReview", "TokenReview"),
    ("authentication.k8s.io/v1", "TokenRequest", "TokenRequest"),
    ("policy/v1", "Eviction", "Eviction"),
    (
        "certificates.k8s.io/v1",
        "CertificateSigningRequest",
        "CertificateSigningRequest",
    ),
    ("v1", "DeleteOptions", "DeleteOptions"),
];
