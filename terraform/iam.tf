# One IAM role per service account that calls AWS (IRSA), each with only what its pods call:
# - orch-ray (Ray pods): read and write the checkpoint bucket.
# - orch-controller (the controller Deployment): read the checkpoint bucket (resume points).
# - kube-system/ebs-csi-controller-sa: the EBS CSI driver's managed policy.
# - kube-system/aws-node-termination-handler: the NTH queue and instance lookups (nth.tf).
# The dashboard's service account gets no role. The roles exist before `kubectl apply`, and
# k8s/base service accounts carry the annotation from `terraform output service_account_roles`.
data "aws_iam_policy_document" "checkpoints_rw" {
  statement {
    sid       = "CheckpointBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]
    resources = [aws_s3_bucket.checkpoints.arn]
  }
  statement {
    sid = "CheckpointObjects"
    actions = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts"]
    resources = ["${aws_s3_bucket.checkpoints.arn}/*"]
  }
}

data "aws_iam_policy_document" "checkpoints_ro" {
  statement {
    sid       = "CheckpointBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.checkpoints.arn]
  }
  statement {
    sid       = "CheckpointObjects"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.checkpoints.arn}/*"]
  }
}

resource "aws_iam_policy" "orch_ray" {
  name   = "${var.cluster_name}-orch-ray"
  policy = data.aws_iam_policy_document.checkpoints_rw.json
}

resource "aws_iam_policy" "orch_controller" {
  name   = "${var.cluster_name}-orch-controller"
  policy = data.aws_iam_policy_document.checkpoints_ro.json
}

module "orch_ray_irsa" {
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "~> 5.44"

  role_name        = "${var.cluster_name}-orch-ray"
  role_policy_arns = { checkpoints = aws_iam_policy.orch_ray.arn }
  oidc_providers = {
    main = {
      provider_arn               = module.eks.oidc_provider_arn
      namespace_service_accounts = ["orch:orch-ray"]
    }
  }
}

module "orch_controller_irsa" {
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "~> 5.44"

  role_name        = "${var.cluster_name}-orch-controller"
  role_policy_arns = { checkpoints = aws_iam_policy.orch_controller.arn }
  oidc_providers = {
    main = {
      provider_arn               = module.eks.oidc_provider_arn
      namespace_service_accounts = ["orch:orch-controller"]
    }
  }
}

module "ebs_csi_irsa" {
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "~> 5.44"

  role_name             = "${var.cluster_name}-ebs-csi"
  attach_ebs_csi_policy = true
  oidc_providers = {
    main = {
      provider_arn               = module.eks.oidc_provider_arn
      namespace_service_accounts = ["kube-system:ebs-csi-controller-sa"]
    }
  }
}
