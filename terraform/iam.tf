# IAM roles for service accounts: the Ray pods (orch-ray) and the controller (orch-controller) may
# read and write the checkpoint bucket and describe EC2 instances (spot interruption details,
# instance types); nothing else.
data "aws_iam_policy_document" "orch" {
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
  statement {
    sid       = "DescribeInstances"
    actions   = ["ec2:DescribeInstances", "ec2:DescribeInstanceTypes", "ec2:DescribeSpotInstanceRequests"]
    resources = ["*"]
  }
}

resource "aws_iam_policy" "orch" {
  name   = "${var.cluster_name}-orch"
  policy = data.aws_iam_policy_document.orch.json
}

module "orch_irsa" {
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "~> 5.44"

  role_name = "${var.cluster_name}-orch"
  role_policy_arns = {
    orch = aws_iam_policy.orch.arn
  }
  oidc_providers = {
    main = {
      provider_arn               = module.eks.oidc_provider_arn
      namespace_service_accounts = ["orch:orch-ray", "orch:orch-controller"]
    }
  }
}
